/* BlockMigrate destination gate: hold I/O on blocks that have not arrived.
 *
 * At switchover the source sends its final dirty bitmap before anything else.
 * The receiver ORs it into the gate bitmap of the destination map
 * (bm_gate_mark_words) and sets BM_STATE_GATE; from then on the VM may run on
 * the destination while the last blocks are still on the wire.  Each block
 * that lands is written through to the image first and only then cleared
 * from the gate (bm_gate_clear_blocks), which wakes every waiter.  A request
 * touching a gated block waits here, so the guest never reads (or partly
 * overwrites) a block older than the source's last acknowledged write.
 *
 * BM_STATE_GATE_ALL is the coarse version used before the final bitmap is
 * known: every request waits, whatever it touches.
 *
 * Waiting uses the map's wake_seq futex (see dirtymap.c): read the sequence,
 * check, sleep on the value read.  Clearers clear the bits first and bump the
 * sequence after, so a waiter cannot miss its release.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

BM_API int
bm_gate_mark_words (bm_map *map, uint64_t first_word, uint64_t nwords,
                    const uint64_t *bits)
{
  return bm__gate_or_words (map, first_word, nwords, bits);
}

BM_API int
bm_gate_clear_blocks (bm_map *map, uint64_t first_block, uint64_t nblocks)
{
  if (bm__check_range (map, "bm_gate_clear_blocks", first_block, nblocks, 0) == -1)
    return -1;
  bm__and_not_bits (map->gate, first_block, nblocks);
  bm__wake (map);
  return 0;
}

/* Must a request on blocks [first, first+n) wait now? */
static int
must_wait (bm_map *map, uint64_t first, uint64_t n)
{
  uint32_t state = __atomic_load_n (&map->hdr->state, __ATOMIC_SEQ_CST);

  if (state & BM_STATE_GATE_ALL)
    return 1;
  return (state & BM_STATE_GATE) && n > 0 && bm__any_bits (map->gate, first, n);
}

BM_API int
bm_gate_wait (bm_map *map, uint64_t offset, uint64_t count)
{
  uint64_t first, n, start;
  uint32_t seq;
  int r = 0;

  if (bm__need_map (map, "bm_gate_wait") == -1)
    return -1;
  if (bm__bytes_to_blocks (map, offset, count, &first, &n) == -1 ||
      bm__map_intact (map) == -1)
    return -1;
  if (!must_wait (map, first, n))
    return 0;                   /* the fast path: one or two loads */

  start = bm__now_ns ();
  for (;;) {
    seq = bm__wake_seq (map);
    if (!must_wait (map, first, n))
      break;
    bm__wait_seq (map, seq, BM_WAIT_SLICE_NS);
    if (bm__map_intact (map) == -1)
      return -1;
    if (bm__call_wait_hook () == -1) {
      errno = ESHUTDOWN;
      r = bm__error ("dirty map %s: gave up waiting for the gate (blocks %"
                     PRIu64 "+%" PRIu64 ")", map->path, first, n);
      break;
    }
  }
  __atomic_fetch_add (&map->hdr->gated_ns, bm__now_ns () - start,
                      __ATOMIC_RELAXED);
  return r;
}
