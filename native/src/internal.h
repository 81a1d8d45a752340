/* BlockMigrate native code: private declarations shared by dirtymap.c,
 * bitmap.c, freeze.c, gate.c, bucket.c and filter.c.  Nothing here is part of the contract
 * (include/blockmigrate/dirtymap.h); C# never sees it.
 */
#ifndef BLOCKMIGRATE_INTERNAL_H
#define BLOCKMIGRATE_INTERNAL_H

#include <stdint.h>
#include <stddef.h>
#include <pthread.h>

#include "blockmigrate/dirtymap.h"

/* libblockmigrate.so is built with -fvisibility=hidden and BM_SHARED_LIBRARY
 * defined, so only functions marked BM_API are exported.  The filter compiles
 * the same sources without it: nothing but filter_init leaves the filter. */
#ifdef BM_SHARED_LIBRARY
#define BM_API __attribute__((visibility ("default")))
#else
#define BM_API
#endif

#define BM_PATH_MAX 4096

/* An open map.  Geometry is copied out of the shared header once it has been
 * validated, so a process that scribbles on the header later cannot make us
 * index outside the mapping.  Every field is written once by bm_map_open /
 * bm_map_create and read-only afterwards; the shared state behind the
 * pointers is accessed only with __atomic builtins. */
struct bm_map {
  char path[BM_PATH_MAX];       /* for messages */
  int fd;                       /* the map file, kept open for the mapping's life */
  void *base;                   /* mmap(MAP_SHARED) of the whole file */
  size_t length;                /* bytes mapped */
  struct bm_header *hdr;        /* == base */
  uint64_t *dirty;              /* base + dirty_offset */
  uint64_t *gate;               /* base + gate_offset */
  uint64_t image_size;          /* copy of hdr->image_size */
  uint64_t blocks;              /* copy of hdr->blocks */
  uint64_t words;               /* copy of hdr->bitmap_words */
  uint32_t block_size;          /* copy of hdr->block_size */
  unsigned block_shift;         /* log2 (block_size) */
};

/* Thread-local last error (dirtymap.c).  Returns -1 so callers can
 * "return bm__error (...)". */
int bm__error (const char *fmt, ...) __attribute__((format (printf, 1, 2)));

/* May a map or its directory be owned by uid?  (root, euid, BM_SERVICE_USER) */
#include <sys/types.h>
int bm__trusted_owner (uid_t uid);

/* 0 while the map file is at least as long as the mapping; else -1 with a
 * message (a shrunken map would raise SIGBUS on access).  One fstat. */
int bm__map_intact (bm_map *map);

/* The argument checks every bm_* entry point starts with (dirtymap.c).  Each
 * returns 0, or -1 with errno and a message that names the function fn:
 *   bm__need_map      map is not NULL (EINVAL, "fn: null map");
 *   bm__check_map     that, and the map is intact (bm__map_intact);
 *   bm__check_map_arg map and arg are not NULL (EINVAL, "fn: null argument"),
 *                     and the map is intact;
 *   bm__check_range   bm__need_map, blocks (or with words, bitmap words)
 *                     [first, first+n) lie inside the map (ERANGE), and the
 *                     map is intact. */
int bm__need_map (bm_map *map, const char *fn);
int bm__check_map (bm_map *map, const char *fn);
int bm__check_map_arg (bm_map *map, const void *arg, const char *fn);
int bm__check_range (bm_map *map, const char *fn, uint64_t first, uint64_t n,
                     int words);

/* Monotonic clock in nanoseconds. */
uint64_t bm__now_ns (void);

/* Cross-process waiting on hdr->wake_seq (freeze.c, with the wait hook).
 *
 * A waiter reads the sequence with bm__wake_seq, re-checks its condition,
 * then calls bm__wait_seq, which sleeps (FUTEX_WAIT, non-private, because
 * the map is shared between processes) until the sequence moves, a wake-up
 * arrives or timeout_ns passes.  Whoever changes a condition somebody may wait
 * on changes it first and then calls bm__wake, which bumps the sequence and
 * wakes everybody.  Spurious wake-ups are allowed; every waiter loops. */
uint32_t bm__wake_seq (bm_map *map);
void bm__wait_seq (bm_map *map, uint32_t seen, uint64_t timeout_ns);
void bm__wake (bm_map *map);

/* Long waits (frozen writers, gated requests) sleep in slices of this many
 * nanoseconds and between slices ask the wait hook whether to go on.  The
 * filter installs a hook that fails when nbdkit is shutting down or the
 * client has gone; the library used by C# has none. */
#define BM_WAIT_SLICE_NS (100u * 1000u * 1000u)
typedef int (*bm_wait_hook) (void);   /* 0: keep waiting; -1: give up */
void bm__set_wait_hook (bm_wait_hook hook);
int bm__call_wait_hook (void);

/* Set (atomic OR), clear (atomic AND-NOT) or test (any bit set?) bits
 * [first, first+n) of a bitmap of the map, word by word (bitmap.c); the range
 * must already be checked. */
void bm__or_bits (uint64_t *bitmap, uint64_t first, uint64_t n);
void bm__and_not_bits (uint64_t *bitmap, uint64_t first, uint64_t n);
int bm__any_bits (const uint64_t *bitmap, uint64_t first, uint64_t n);

/* bm_gate_mark_words without the name: OR bits into the gate bitmap. */
int bm__gate_or_words (bm_map *map, uint64_t first_word, uint64_t nwords,
                       const uint64_t *bits);

/* Population count of a bitmap (relaxed loads; a snapshot). */
int64_t bm__popcount_words (const uint64_t *bitmap, uint64_t words);

/* Convert a byte range to the blocks it touches; clips at image_size.
 * Returns 0 with *nblocks == 0 for an empty range. */
int bm__bytes_to_blocks (bm_map *map, uint64_t offset, uint64_t count,
                         uint64_t *first_block, uint64_t *nblocks);

/* The throttle's token bucket (bucket.c).  One per process, shared by every
 * connection; the rate comes from the map at each call. */
struct bm_bucket {
  pthread_mutex_t lock;         /* guards every field below */
  uint64_t rate;                /* bytes/s the fields were computed for; 0 = none yet */
  double tokens;                /* bytes available now; negative = debt */
  uint64_t last_ns;             /* bm__now_ns () of the last refill */
};
void bm__bucket_init (struct bm_bucket *b);
/* Take count bytes from the bucket at rate bps; return how long the caller
 * must wait, in nanoseconds (0 when rate is 0). */
uint64_t bm__bucket_take (struct bm_bucket *b, uint64_t rate, uint64_t count);

#endif /* BLOCKMIGRATE_INTERNAL_H */
