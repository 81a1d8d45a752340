/* BlockMigrate dirty map: freezing, the write window and waiting.
 *
 * The freeze handshake uses two shared words, inflight and the FROZEN bit of
 * state.  A writer increments inflight and then reads state; the freezer sets
 * FROZEN and then reads inflight.  All four accesses are sequentially
 * consistent, so at least one side sees the other: either the writer sees
 * FROZEN, backs out and waits for the thaw, or the freezer counts the writer
 * and waits for its bm_write_end, which marks the blocks before it
 * decrements.  Hence when bm_freeze returns, every write that reached the
 * store is marked and no new write can start until bm_thaw.
 *
 *   writer                              freezer
 *   inflight++            (seq_cst)     state |= FROZEN        (seq_cst)
 *   if state & FROZEN:    (seq_cst)     while inflight != 0:   (seq_cst)
 *     inflight--, wait for thaw, retry    wait
 *   ... write to the plugin ...
 *   mark bits; inflight--; if 0 and FROZEN: wake
 *
 * Waiting across processes goes through wake_seq, the one futex word of the
 * map.  Whoever releases a waiter (thaw, the last writer out while frozen, a
 * gate cleared, a state flag cleared) changes the condition first, then bumps
 * wake_seq and does FUTEX_WAKE.  A waiter reads wake_seq, re-checks its
 * condition and only then sleeps on the value it read, so a wake-up between
 * check and sleep is never lost.  The futex is not FUTEX_PRIVATE because the
 * waker is often another process; sleeps are sliced (BM_WAIT_SLICE_NS) so a
 * crashed peer costs latency, never a hang, and the filter can give up when
 * nbdkit shuts down.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define LOAD(field) __atomic_load_n (&map->hdr->field, __ATOMIC_SEQ_CST)

/* ---- waiting ----------------------------------------------------------- */

static bm_wait_hook wait_hook;  /* set once by the filter before serving */

void
bm__set_wait_hook (bm_wait_hook hook)
{
  wait_hook = hook;
}

int
bm__call_wait_hook (void)
{
  return wait_hook ? wait_hook () : 0;
}

uint32_t
bm__wake_seq (bm_map *map)
{
  return __atomic_load_n (&map->hdr->wake_seq, __ATOMIC_SEQ_CST);
}

void
bm__wait_seq (bm_map *map, uint32_t seen, uint64_t timeout_ns)
{
  struct timespec ts = {
    .tv_sec = (time_t) (timeout_ns / 1000000000u),
    .tv_nsec = (long) (timeout_ns % 1000000000u),
  };

  /* EAGAIN (the sequence already moved), EINTR and ETIMEDOUT all mean
   * "look again", which every caller does. */
  syscall (SYS_futex, &map->hdr->wake_seq, FUTEX_WAIT, seen, &ts, NULL, 0);
}

void
bm__wake (bm_map *map)
{
  __atomic_fetch_add (&map->hdr->wake_seq, 1, __ATOMIC_SEQ_CST);
  syscall (SYS_futex, &map->hdr->wake_seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

#define BM_STATE_ALL (BM_STATE_TRACKING | BM_STATE_FROZEN | BM_STATE_GATE | \
                      BM_STATE_GATE_ALL)

BM_API int
bm_set_state_flags (bm_map *map, uint32_t set, uint32_t clear)
{
  if (bm__need_map (map, "bm_set_state_flags") == -1)
    return -1;
  if ((set | clear) & ~BM_STATE_ALL) {
    errno = EINVAL;
    return bm__error ("bm_set_state_flags: unknown flags 0x%x",
                      (set | clear) & ~BM_STATE_ALL);
  }
  if (set & clear) {
    errno = EINVAL;
    return bm__error ("bm_set_state_flags: flags 0x%x both set and cleared",
                      set & clear);
  }
  if (bm__map_intact (map) == -1)
    return -1;
  if (set)
    __atomic_fetch_or (&map->hdr->state, set, __ATOMIC_SEQ_CST);
  if (clear) {
    __atomic_fetch_and (&map->hdr->state, ~clear, __ATOMIC_SEQ_CST);
    bm__wake (map);             /* clearing FROZEN/GATE/GATE_ALL releases waiters */
  }
  return 0;
}

/* ---- freeze and the write window --------------------------------------- */

BM_API int
bm_freeze (bm_map *map, int timeout_ms)
{
  uint64_t start, deadline, now, left;
  uint32_t seq;

  if (bm__check_map (map, "bm_freeze") == -1)
    return -1;
  start = bm__now_ns ();
  deadline = timeout_ms < 0 ? UINT64_MAX
                            : start + (uint64_t) timeout_ms * 1000000u;
  __atomic_fetch_or (&map->hdr->state, BM_STATE_FROZEN, __ATOMIC_SEQ_CST);
  for (;;) {
    seq = bm__wake_seq (map);
    if (LOAD (inflight) == 0)
      return 0;
    now = bm__now_ns ();
    if (now >= deadline) {
      left = LOAD (inflight);
      bm_thaw (map);
      errno = ETIMEDOUT;
      return bm__error ("dirty map %s: freeze timed out after %d ms with %"
                        PRIu64 " writes in flight; thawed again",
                        map->path, timeout_ms, left);
    }
    left = deadline - now;
    bm__wait_seq (map, seq, left < BM_WAIT_SLICE_NS ? left : BM_WAIT_SLICE_NS);
    if (bm__map_intact (map) == -1)
      return -1;
  }
}

BM_API int
bm_thaw (bm_map *map)
{
  if (bm__check_map (map, "bm_thaw") == -1)
    return -1;
  __atomic_fetch_and (&map->hdr->state, ~BM_STATE_FROZEN, __ATOMIC_SEQ_CST);
  bm__wake (map);
  return 0;
}

/* Leave the in-flight window; wake a freezer waiting for the last writer. */
static void
leave_window (bm_map *map)
{
  uint64_t left = __atomic_sub_fetch (&map->hdr->inflight, 1, __ATOMIC_SEQ_CST);

  if (left == 0 && (LOAD (state) & BM_STATE_FROZEN))
    bm__wake (map);
}

BM_API int
bm_write_begin (bm_map *map)
{
  uint64_t start;
  uint32_t seq;

  if (bm__need_map (map, "bm_write_begin") == -1)
    return -1;
  __atomic_fetch_add (&map->hdr->inflight, 1, __ATOMIC_SEQ_CST);
  if (!(LOAD (state) & BM_STATE_FROZEN))
    return 0;                   /* the fast path: two atomics */

  start = bm__now_ns ();
  for (;;) {
    leave_window (map);
    for (;;) {
      seq = bm__wake_seq (map);
      if (!(LOAD (state) & BM_STATE_FROZEN))
        break;
      bm__wait_seq (map, seq, BM_WAIT_SLICE_NS);
      if (bm__map_intact (map) == -1)
        return -1;   /* out of the window already (leave_window above) */
      if (bm__call_wait_hook () == -1) {
        __atomic_fetch_add (&map->hdr->frozen_ns, bm__now_ns () - start,
                            __ATOMIC_SEQ_CST);
        errno = ESHUTDOWN;
        return bm__error ("dirty map %s: gave up waiting for thaw", map->path);
      }
    }
    __atomic_fetch_add (&map->hdr->inflight, 1, __ATOMIC_SEQ_CST);
    if (!(LOAD (state) & BM_STATE_FROZEN))
      break;
  }
  __atomic_fetch_add (&map->hdr->frozen_ns, bm__now_ns () - start,
                      __ATOMIC_SEQ_CST);
  return 0;
}

BM_API void
bm_write_end (bm_map *map, uint64_t offset, uint64_t count, int ok)
{
  uint64_t first, n;

  if (map == NULL)
    return;
  if (ok) {
    if (bm__bytes_to_blocks (map, offset, count, &first, &n) == 0)
      bm__or_bits (map->dirty, first, n);
    __atomic_fetch_add (&map->hdr->writes, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add (&map->hdr->bytes_written, count, __ATOMIC_RELAXED);
  }
  /* Marks above are seq_cst and precede this decrement: a freezer that sees
   * inflight reach 0 sees them too. */
  leave_window (map);
}

BM_API void
bm_add_throttled_ns (bm_map *map, uint64_t ns)
{
  if (map)
    __atomic_fetch_add (&map->hdr->throttled_ns, ns, __ATOMIC_RELAXED);
}

