/* BlockMigrate dirty map: the bitmaps -- peeking, taking, marking.
 *
 * Bit b is bit (b % 64) of 64-bit word (b / 64).  Two rules keep the
 * pre-copy honest:
 *
 *  - Setting is an atomic OR (writers in bm_write_end, the orchestrator in
 *    bm_mark_words when it gives back blocks whose transfer failed).
 *  - Taking is an atomic exchange of a whole word with 0 (bm_take).  A bit
 *    set after the exchange belongs to the next round, and a write whose bit
 *    was taken reached the store before it was marked, so the block the
 *    orchestrator reads after taking is never older than an acknowledged write.
 *
 * Nothing else ever clears a dirty bit.  Bits beyond the last block are never
 * set, so population counts are exact.
 */
#include <errno.h>
#include <inttypes.h>

#include "internal.h"

#define LOAD(field) __atomic_load_n (&map->hdr->field, __ATOMIC_SEQ_CST)

BM_API int64_t
bm_dirty_count (bm_map *map)
{
  if (bm__check_map (map, "bm_dirty_count") == -1)
    return -1;
  return bm__popcount_words (map->dirty, map->words);
}

/* Words [first, first+n) must lie inside the bitmap. */
static int
check_words (bm_map *map, const char *fn, uint64_t first, uint64_t n)
{
  return bm__check_range (map, fn, first, n, 1);
}

/* The map's two bitmaps, named so a function can be told which before the
 * map pointer is checked. */
enum which { DIRTY, GATE };

static uint64_t *
bitmap_of (bm_map *map, enum which which)
{
  return which == GATE ? map->gate : map->dirty;
}

/* Copy words [first_word, first_word+nwords) of a bitmap out, without
 * changing them. */
static int
peek_words (bm_map *map, enum which which, const char *fn,
            uint64_t first_word, uint64_t nwords, uint64_t *out)
{
  const uint64_t *bitmap;
  uint64_t i;

  if (check_words (map, fn, first_word, nwords) == -1)
    return -1;
  if (out == NULL && nwords > 0) {
    errno = EINVAL;
    return bm__error ("%s: null output buffer", fn);
  }
  bitmap = bitmap_of (map, which);
  for (i = 0; i < nwords; i++)
    out[i] = __atomic_load_n (&bitmap[first_word + i], __ATOMIC_SEQ_CST);
  return 0;
}

BM_API int
bm_peek (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out)
{
  return peek_words (map, DIRTY, "bm_peek", first_word, nwords, out);
}

/* The gate bitmap, read the same way (destination: which blocks are still stale). */
BM_API int
bm_gate_peek (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out)
{
  return peek_words (map, GATE, "bm_gate_peek", first_word, nwords, out);
}

/* ---- taking and marking ------------------------------------------------ */

BM_API int64_t
bm_take (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out)
{
  int64_t n = 0;
  uint64_t i, old;

  if (check_words (map, "bm_take", first_word, nwords) == -1)
    return -1;
  /* out may be NULL: take and discard (start of tracking). */
  for (i = 0; i < nwords; i++) {
    uint64_t *w = &map->dirty[first_word + i];
    /* A word that reads 0 is left alone: taking it would return 0 too, and a
     * bit set right after belongs to the next round either way.  Skipping the
     * exchange keeps clean cache lines clean. */
    old = __atomic_load_n (w, __ATOMIC_SEQ_CST);
    if (old != 0)
      old = __atomic_exchange_n (w, 0, __ATOMIC_SEQ_CST);
    if (out)
      out[i] = old;
    n += __builtin_popcountll (old);
  }
  return n;
}

static int
or_words (bm_map *map, enum which which, const char *fn,
          uint64_t first_word, uint64_t nwords, const uint64_t *bits)
{
  uint64_t *bitmap;
  uint64_t i, last_mask = ~(uint64_t) 0;

  if (check_words (map, fn, first_word, nwords) == -1)
    return -1;
  if (bits == NULL && nwords > 0) {
    errno = EINVAL;
    return bm__error ("%s: null bits", fn);
  }
  bitmap = bitmap_of (map, which);
  /* Never set bits past the last block: counts must stay exact. */
  if (map->blocks % 64)
    last_mask = ((uint64_t) 1 << (map->blocks % 64)) - 1;
  for (i = 0; i < nwords; i++) {
    uint64_t b = bits[i];
    if (first_word + i == map->words - 1)
      b &= last_mask;
    if (b)
      __atomic_fetch_or (&bitmap[first_word + i], b, __ATOMIC_SEQ_CST);
  }
  return 0;
}

BM_API int
bm_mark_words (bm_map *map, uint64_t first_word, uint64_t nwords,
               const uint64_t *bits)
{
  return or_words (map, DIRTY, "bm_mark_words",
                   first_word, nwords, bits);
}

int
bm__gate_or_words (bm_map *map, uint64_t first_word, uint64_t nwords,
                   const uint64_t *bits)
{
  return or_words (map, GATE, "bm_gate_mark_words",
                   first_word, nwords, bits);
}

/* The mask of bits [first, end) that fall in word first/64; *span is how many. */
static uint64_t
word_mask (uint64_t first, uint64_t end, uint64_t *span)
{
  uint64_t bit = first % 64;

  *span = 64 - bit < end - first ? 64 - bit : end - first;
  return *span == 64 ? ~(uint64_t) 0 : (((uint64_t) 1 << *span) - 1) << bit;
}

void
bm__or_bits (uint64_t *bitmap, uint64_t first, uint64_t n)
{
  uint64_t end = first + n, span;

  for (; first < end; first += span)
    __atomic_fetch_or (&bitmap[first / 64], word_mask (first, end, &span),
                       __ATOMIC_SEQ_CST);
}

void
bm__and_not_bits (uint64_t *bitmap, uint64_t first, uint64_t n)
{
  uint64_t end = first + n, span;

  for (; first < end; first += span)
    __atomic_fetch_and (&bitmap[first / 64], ~word_mask (first, end, &span),
                        __ATOMIC_SEQ_CST);
}

int
bm__any_bits (const uint64_t *bitmap, uint64_t first, uint64_t n)
{
  uint64_t end = first + n, span;

  for (; first < end; first += span)
    if (__atomic_load_n (&bitmap[first / 64], __ATOMIC_SEQ_CST) &
        word_mask (first, end, &span))
      return 1;
  return 0;
}

BM_API int
bm_mark_blocks (bm_map *map, uint64_t first_block, uint64_t nblocks)
{
  if (bm__check_range (map, "bm_mark_blocks", first_block, nblocks, 0) == -1)
    return -1;
  bm__or_bits (map->dirty, first_block, nblocks);
  return 0;
}

int
bm__bytes_to_blocks (bm_map *map, uint64_t offset, uint64_t count,
                     uint64_t *first_block, uint64_t *nblocks)
{
  uint64_t end;

  *first_block = *nblocks = 0;
  if (count == 0)
    return 0;
  if (offset >= map->image_size) {
    errno = ERANGE;
    return bm__error ("dirty map %s: offset %" PRIu64 " beyond the image size %"
                      PRIu64, map->path, offset, map->image_size);
  }
  end = count > map->image_size - offset ? map->image_size : offset + count;
  *first_block = offset >> map->block_shift;
  *nblocks = ((end - 1) >> map->block_shift) - *first_block + 1;
  return 0;
}

BM_API int
bm_mark_bytes (bm_map *map, uint64_t offset, uint64_t count)
{
  uint64_t first, n;

  if (bm__need_map (map, "bm_mark_bytes") == -1)
    return -1;
  if (bm__bytes_to_blocks (map, offset, count, &first, &n) == -1 ||
      bm__map_intact (map) == -1)
    return -1;
  bm__or_bits (map->dirty, first, n);
  return 0;
}

