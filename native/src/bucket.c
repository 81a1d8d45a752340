/* BlockMigrate write throttle: a token bucket.
 *
 * When the guest dirties blocks faster than the link can send them, pre-copy
 * never converges (Bradford et al. 2007, section 4.3).  The orchestrator then
 * writes a rate into the map's throttle_bps and the filter delays writes so
 * that, on average, no more than that many bytes per second get through:
 *
 *            refill: rate bytes/s
 *                 |
 *                 v
 *          +-------------+  capacity = rate / 10 (100 ms of writes),
 *          |   tokens    |  at least 64 KiB; a larger request simply
 *          +-------------+  puts the bucket in debt
 *                 |
 *                 v  each write takes its size; when that leaves the bucket
 *                    negative (in debt), the writer sleeps debt / rate
 *
 * Debt is what lets concurrent writers queue fairly without a queue: every
 * writer takes its tokens at once under the lock and then sleeps, outside the
 * lock, for exactly as long as the bucket needs to pay back the debt present
 * after its own take; the next writer inherits that debt and sleeps longer.
 *
 * The rate is read from the shared map on every write (a relaxed load; it is
 * a hint, not a synchronisation point), so the orchestrator can change it or
 * switch it off (0) at run time; with 0 nothing here takes a lock.  A change
 * of rate keeps the bucket's bytes but caps them at the new capacity; after a
 * pause (or a spell of 0) the bucket has refilled, so old debt is forgotten.
 *
 * The sleep itself happens in the filter (filter.c), before the write enters
 * the in-flight window, so a freeze never waits for a throttled writer.
 * Reads are never throttled.
 */
#include "internal.h"

#define BURST_DIVISOR 10                 /* capacity = rate / 10: 100 ms */
#define MIN_CAPACITY  (64.0 * 1024)   /* a floor for very low rates */

void
bm__bucket_init (struct bm_bucket *b)
{
  pthread_mutex_init (&b->lock, NULL);
  b->rate = 0;
  b->tokens = 0;
  b->last_ns = 0;
}

static double
capacity (uint64_t rate)
{
  double c = (double) rate / BURST_DIVISOR;

  return c > MIN_CAPACITY ? c : MIN_CAPACITY;
}

uint64_t
bm__bucket_take (struct bm_bucket *b, uint64_t rate, uint64_t count)
{
  uint64_t now, wait_ns = 0;
  double cap;

  if (rate == 0)
    return 0;

  now = bm__now_ns ();
  pthread_mutex_lock (&b->lock);
  cap = capacity (rate);
  if (b->rate == 0) {
    /* Throttling just started: begin with a full bucket. */
    b->tokens = cap;
    b->last_ns = now;
  }
  else {
    if (now > b->last_ns)
      b->tokens += (double) (now - b->last_ns) * (double) rate / 1e9;
    b->last_ns = now;
  }
  b->rate = rate;
  if (b->tokens > cap)
    b->tokens = cap;
  b->tokens -= (double) count;
  if (b->tokens < 0)
    wait_ns = (uint64_t) (-b->tokens * 1e9 / (double) rate);
  pthread_mutex_unlock (&b->lock);
  return wait_ns;
}
