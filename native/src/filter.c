/* nbdkit-blockmigrate-filter: the shim between the VM's NBD client and the
 * plugin that owns the disk image.
 *
 *   nbdkit -U SOCK --filter=blockmigrate file file=IMG \
 *          dirtymap=/dev/shm/blockmigrate/VM.map [blocksize=4K] [gate=false]
 *
 * Source side, every write, trim and zero goes
 *
 *   throttle (token bucket, outside the window)
 *     -> bm_write_begin (waits while the map is frozen; enters the window)
 *       -> next->pwrite / trim / zero
 *     -> bm_write_end (marks the blocks if it succeeded; leaves the window)
 *   -> reply to the client
 *
 * so a block's dirty bit is set after its data reached the plugin and before
 * the client hears about it.  Reads, flushes and extents mark nothing.  A
 * failed request marks nothing new (the contract: bm_write_end marks only on
 * success) and never clears a bit; a plugin that can fail half-way through a
 * write would leave a modified but unmarked block, which the file plugin does
 * not do for the errors it reports.  The fast path takes no lock and makes one
 * system call, an fstat that checks the map has not shrunk under us (a
 * truncated map would raise SIGBUS): then a relaxed load of the throttle rate
 * and a handful of atomics on the shared header.
 * The filter keeps the plugin's thread model (parallel for file).
 *
 * Destination side (gate=true) every request additionally waits on the gate
 * (gate.c) before it starts: reads and cache so the guest never sees a stale
 * block, writes so a block still on the wire cannot overwrite the guest's
 * newer data, extents so a stale hole is not reported as a hole.  The gate
 * wait comes before bm_write_begin: like the throttle, it must never hold up
 * a freeze.
 *
 * The map is opened (or created) in .after_fork, when the plugin can be asked
 * for the export size and before any client connects; if that fails nbdkit
 * does not start.  The map and its directory must be owned by root, this
 * user or the service user and closed to group and others (dirtymap.c).
 * Every connection shares it, so multi-conn is safe.  If the
 * previous nbdkit on this map died inside a write, every block is marked
 * dirty (see recover_from_dead_owner).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-filter.h>

#include "internal.h"

static char *map_path;                           /* config only; freed in unload */
static uint32_t block_size = BM_DEFAULT_BLOCK_SIZE; /* config only */
static bool gate_mode;                           /* config only */
static bm_map *map;       /* set in .after_fork before any connection; read-only after */
static struct bm_bucket bucket;                  /* its own lock */

static void
blockmigrate_load (void)
{
  bm__bucket_init (&bucket);
}

static void
blockmigrate_unload (void)
{
  bm_map_close (map);
  map = NULL;
  free (map_path);
}

static int
blockmigrate_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
                     const char *key, const char *value)
{
  if (strcmp (key, "dirtymap") == 0) {
    free (map_path);
    map_path = nbdkit_absolute_path (value);
    return map_path ? 0 : -1;
  }
  if (strcmp (key, "blocksize") == 0) {
    int64_t r = nbdkit_parse_size (value);
    if (r == -1) {
      nbdkit_error ("blockmigrate: blocksize=%s: not a size (e.g. 64K)", value);
      return -1;
    }
    if (!bm_valid_block_size ((uint64_t) r)) {
      nbdkit_error ("blockmigrate: blocksize=%s: must be a power of two "
                    "between 4K and 1M", value);
      return -1;
    }
    block_size = (uint32_t) r;
    return 0;
  }
  if (strcmp (key, "gate") == 0) {
    int r = nbdkit_parse_bool (value);
    if (r == -1) {
      nbdkit_error ("blockmigrate: gate=%s: expected true or false", value);
      return -1;
    }
    gate_mode = r;
    return 0;
  }
  return next (nxdata, key, value);
}

static int
blockmigrate_config_complete (nbdkit_next_config_complete *next,
                              nbdkit_backend *nxdata)
{
  if (map_path == NULL) {
    nbdkit_error ("blockmigrate: the dirtymap=PATH parameter is required "
                  "(e.g. dirtymap=/dev/shm/blockmigrate/VM.map)");
    return -1;
  }
  return next (nxdata);
}

#define blockmigrate_config_help \
  "dirtymap=PATH     (required) The shared dirty map, created when absent.\n" \
  "blocksize=SIZE    Bytes per dirty bit, 4K..1M, power of two (default 4K).\n" \
  "gate=BOOL         Destination mode: hold I/O on gated blocks (default false)."

/* Interrupts long waits when nbdkit shuts down or the client has gone. */
static int
wait_hook (void)
{
  return nbdkit_nanosleep (0, 1000) == -1 ? -1 : 0;
}

static int
blockmigrate_get_ready (int thread_model)
{
  struct stat st;
  bm_map *m;

  /* A map that exists must be sound before we daemonize, so a corrupt one
   * stops nbdkit with a clear message even without -f.  Its geometry is
   * checked against the export in .after_fork. */
  if (stat (map_path, &st) == 0) {
    m = bm_map_open (map_path);
    if (m == NULL) {
      nbdkit_error ("blockmigrate: %s", bm_last_error ());
      return -1;
    }
    if (m->block_size != block_size) {
      nbdkit_error ("blockmigrate: dirty map %s: geometry mismatch: map has "
                    "blocks of %u bytes, blocksize=%u", map_path,
                    m->block_size, block_size);
      bm_map_close (m);
      return -1;
    }
    bm_map_close (m);
  }
  bm__set_wait_hook (wait_hook);
  return 0;
}

/* A previous nbdkit that died inside the write window left inflight above 0
 * (every freeze would then time out) and may have written blocks it never
 * marked.  We cannot tell which, so every block is marked dirty: one extra
 * round of copying instead of a silently stale block at the destination. */
static void
recover_from_dead_owner (void)
{
  uint64_t owner = __atomic_load_n (&map->hdr->owner_pid, __ATOMIC_SEQ_CST);
  uint64_t inflight = __atomic_load_n (&map->hdr->inflight, __ATOMIC_SEQ_CST);

  if (inflight == 0)
    return;
  if (owner != 0 && owner != (uint64_t) getpid () &&
      !(kill ((pid_t) owner, 0) == -1 && errno == ESRCH)) {
    nbdkit_debug ("blockmigrate: map %s: %" PRIu64 " writes in flight in live "
                  "process %" PRIu64 "; leaving them", map_path, inflight, owner);
    return;
  }
  nbdkit_debug ("blockmigrate: map %s: previous owner %" PRIu64 " died with %"
                PRIu64 " writes in flight; marking every block dirty",
                map_path, owner, inflight);
  bm_mark_blocks (map, 0, map->blocks);
  __atomic_store_n (&map->hdr->inflight, 0, __ATOMIC_SEQ_CST);
  bm__wake (map);
}

static int
blockmigrate_after_fork (nbdkit_backend *backend)
{
  nbdkit_next *next;
  int64_t size;

  /* Ask the plugin for the size through a context of our own. */
  next = nbdkit_next_context_open (backend, 1, "", 1);
  if (next == NULL) {
    nbdkit_error ("blockmigrate: cannot open the plugin to learn the export size");
    return -1;
  }
  if (next->prepare (next) == -1) {
    nbdkit_next_context_close (next);
    return -1;
  }
  size = next->get_size (next);
  next->finalize (next);
  nbdkit_next_context_close (next);
  if (size == -1)
    return -1;

  map = bm_map_open_or_create (map_path, (uint64_t) size, block_size);
  if (map == NULL) {
    nbdkit_error ("blockmigrate: %s", bm_last_error ());
    return -1;
  }
  recover_from_dead_owner ();
  bm_set_owner (map, (uint64_t) getpid ());
  nbdkit_debug ("blockmigrate: map %s: %" PRIu64 " blocks of %u bytes, gate %s",
                map_path, map->blocks, map->block_size,
                gate_mode ? "on" : "off");
  return 0;
}

static void
blockmigrate_cleanup (nbdkit_backend *backend)
{
  uint64_t me = (uint64_t) getpid ();

  if (map)
    __atomic_compare_exchange_n (&map->hdr->owner_pid, &me, 0, false,
                                 __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* Every connection must see the export the map was made for. */
static int
blockmigrate_prepare (nbdkit_next *next, void *handle, int readonly)
{
  int64_t size = next->get_size (next);

  if (size == -1)
    return -1;
  if ((uint64_t) size != map->image_size) {
    nbdkit_error ("blockmigrate: dirty map %s: geometry mismatch: map is for "
                  "%" PRIu64 " bytes, export is %" PRId64 " bytes",
                  map_path, map->image_size, size);
    return -1;
  }
  return 0;
}

/* Before a request touches the shared memory: a map that shrank under us
 * (only its owner can truncate it, see dirtymap.c) fails the request with EIO
 * instead of killing nbdkit with SIGBUS. */
static int
map_intact (int *err)
{
  if (bm__map_intact (map) == -1) {
    nbdkit_error ("blockmigrate: %s", bm_last_error ());
    *err = EIO;
    return -1;
  }
  return 0;
}

/* The throttle: sleep as the bucket says, in slices so that switching the
 * throttle off (rate 0) or shutting down ends the sleep early. */
static int
throttle (uint64_t charge, int *err)
{
  uint64_t rate, wait_ns, start, slept = 0;

  rate = __atomic_load_n (&map->hdr->throttle_bps, __ATOMIC_RELAXED);
  if (rate == 0)
    return 0;
  wait_ns = bm__bucket_take (&bucket, rate, charge);
  if (wait_ns == 0)
    return 0;

  start = bm__now_ns ();
  while (slept < wait_ns) {
    uint64_t ns = wait_ns - slept;
    if (ns > BM_WAIT_SLICE_NS)
      ns = BM_WAIT_SLICE_NS;
    if (nbdkit_nanosleep ((unsigned) (ns / 1000000000u),
                          (unsigned) (ns % 1000000000u)) == -1) {
      bm_add_throttled_ns (map, bm__now_ns () - start);
      *err = ESHUTDOWN;
      return -1;
    }
    if (__atomic_load_n (&map->hdr->throttle_bps, __ATOMIC_RELAXED) == 0)
      break;
    slept = bm__now_ns () - start;
  }
  bm_add_throttled_ns (map, bm__now_ns () - start);
  return 0;
}

static int
gate (uint64_t offset, uint64_t count, int *err)
{
  if (gate_mode && bm_gate_wait (map, offset, count) == -1) {
    nbdkit_error ("blockmigrate: %s", bm_last_error ());
    *err = errno ? errno : ESHUTDOWN;
    return -1;
  }
  return 0;
}

/* Everything before the plugin call of a write; on success the caller is in
 * the in-flight window and must call bm_write_end. */
static int
write_prologue (uint64_t charge, uint64_t offset, uint64_t count, int *err)
{
  if (map_intact (err) == -1)
    return -1;
  if (throttle (charge, err) == -1)
    return -1;
  if (gate (offset, count, err) == -1)
    return -1;
  if (bm_write_begin (map) == -1) {
    nbdkit_error ("blockmigrate: %s", bm_last_error ());
    *err = ESHUTDOWN;
    return -1;
  }
  return 0;
}

static int
blockmigrate_pwrite (nbdkit_next *next, void *handle,
                     const void *buf, uint32_t count, uint64_t offset,
                     uint32_t flags, int *err)
{
  int r;

  if (write_prologue (count, offset, count, err) == -1)
    return -1;
  r = next->pwrite (next, buf, count, offset, flags, err);
  bm_write_end (map, offset, count, r != -1);
  return r;
}

/* Zeroed and trimmed ranges cost the link almost nothing (the orchestrator
 * sends them as ranges), so they are charged at most one block each. */
static uint64_t
range_charge (uint32_t count)
{
  return count < block_size ? count : block_size;
}

static int
blockmigrate_zero (nbdkit_next *next, void *handle,
                   uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (write_prologue (range_charge (count), offset, count, err) == -1)
    return -1;
  r = next->zero (next, count, offset, flags, err);
  bm_write_end (map, offset, count, r != -1);
  return r;
}

static int
blockmigrate_trim (nbdkit_next *next, void *handle,
                   uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  int r;

  if (write_prologue (range_charge (count), offset, count, err) == -1)
    return -1;
  r = next->trim (next, count, offset, flags, err);
  bm_write_end (map, offset, count, r != -1);
  return r;
}

static int
blockmigrate_pread (nbdkit_next *next, void *handle,
                    void *buf, uint32_t count, uint64_t offset,
                    uint32_t flags, int *err)
{
  if (gate (offset, count, err) == -1)
    return -1;
  return next->pread (next, buf, count, offset, flags, err);
}

static int
blockmigrate_cache (nbdkit_next *next, void *handle,
                    uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  if (gate (offset, count, err) == -1)
    return -1;
  return next->cache (next, count, offset, flags, err);
}

static int
blockmigrate_extents (nbdkit_next *next, void *handle,
                      uint32_t count, uint64_t offset, uint32_t flags,
                      struct nbdkit_extents *extents, int *err)
{
  if (gate (offset, count, err) == -1)
    return -1;
  return next->extents (next, count, offset, flags, extents, err);
}

static struct nbdkit_filter filter = {
  .name              = "blockmigrate",
  .longname          = "BlockMigrate dirty-block tracking filter",
  .load              = blockmigrate_load,
  .unload            = blockmigrate_unload,
  .config            = blockmigrate_config,
  .config_complete   = blockmigrate_config_complete,
  .config_help       = blockmigrate_config_help,
  .get_ready         = blockmigrate_get_ready,
  .after_fork        = blockmigrate_after_fork,
  .cleanup           = blockmigrate_cleanup,
  .prepare           = blockmigrate_prepare,
  .pwrite            = blockmigrate_pwrite,
  .zero              = blockmigrate_zero,
  .trim              = blockmigrate_trim,
  .pread             = blockmigrate_pread,
  .cache             = blockmigrate_cache,
  .extents           = blockmigrate_extents,
};

NBDKIT_REGISTER_FILTER (filter)
