/* BlockMigrate dirty map: the contract between the nbdkit filter (the shim),
 * the orchestrator (C#, through P/Invoke) and anything else that reads a map.
 *
 * One map per disk: a file (normally /dev/shm/blockmigrate/<vm>.map) mapped
 * MAP_SHARED by every process that uses it.  Layout:
 *
 *   offset 0                      struct bm_header (BM_HEADER_SIZE bytes)
 *   offset dirty_offset           dirty bitmap, one bit per block, 64-bit words
 *   offset gate_offset            gate (stale) bitmap, same size
 *
 * Bit b of the bitmap is bit (b % 64) of word (b / 64).  All fields are in the
 * byte order of the host that created the map (maps live in shared memory and
 * never cross hosts); byte_order holds BM_BYTE_ORDER as written by the creator
 * so a reader on another byte order refuses the map.
 *
 * Ordering rules (the invariants the filter keeps):
 *  - A write's blocks are marked dirty (atomic OR) after the write reached the
 *    backing store and before the NBD reply is sent.
 *  - Taking (take-and-clear) is an atomic exchange per 64-bit word; a block
 *    read after its bit was taken is never older than a write already
 *    acknowledged.
 *  - freeze: the freezer sets BM_STATE_FROZEN, then waits until inflight is 0.
 *    A writer increments inflight, then checks FROZEN; if set it backs out and
 *    waits for thaw.  Both sides use sequentially consistent atomics, so once
 *    bm_freeze returns no write is between "backing store" and "marked".
 *  - gate (destination): while BM_STATE_GATE_ALL is set every request waits;
 *    otherwise a request touching a block whose gate bit is set waits until
 *    the bit is cleared (the block's data has landed).
 *
 * Functions return -1 (or NULL) on error and leave a message for
 * bm_last_error(), which is thread-local.  The *_ns counters are summed over
 * requests, so with many requests waiting at once they grow faster than the
 * clock.
 */
#ifndef BLOCKMIGRATE_DIRTYMAP_H
#define BLOCKMIGRATE_DIRTYMAP_H

#include <stdint.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BM_MAGIC          "BMDIRTY1"        /* 8 bytes, no terminator stored */
#define BM_VERSION        1u
#define BM_HEADER_SIZE    4096u
#define BM_BYTE_ORDER     0x01020304u
#define BM_MIN_BLOCK_SIZE 4096u
#define BM_MAX_BLOCK_SIZE (1024u * 1024u)
#define BM_DEFAULT_BLOCK_SIZE 4096u  /* chosen by measurement: docs/BENCHMARKS.md, "Map block size" */
#define BM_COOKIE_SIZE    32u

/* state flags (bm_header.state, atomic) */
#define BM_STATE_TRACKING  0x1u   /* a migration is using the map */
#define BM_STATE_FROZEN    0x2u   /* new writes wait (never fail) */
#define BM_STATE_GATE      0x4u   /* destination: gate bitmap is enforced */
#define BM_STATE_GATE_ALL  0x8u   /* destination: every request waits */

/* The shared header.  Readers go through bm_map_info(); C# never maps this
 * struct by hand (tests compare bm_info_offset() with its own view). */
struct bm_header {
  char     magic[8];          /* BM_MAGIC */
  uint32_t version;           /* BM_VERSION */
  uint32_t header_size;       /* BM_HEADER_SIZE */
  uint32_t byte_order;        /* BM_BYTE_ORDER in the creator's order */
  uint32_t block_size;        /* power of two, 4 KiB .. 1 MiB */
  uint64_t image_size;        /* bytes of the export */
  uint64_t blocks;            /* ceil(image_size / block_size) */
  uint64_t bitmap_words;      /* ceil(blocks / 64) */
  uint64_t dirty_offset;      /* byte offset of the dirty bitmap */
  uint64_t gate_offset;       /* byte offset of the gate bitmap */
  uint32_t state;             /* BM_STATE_*, atomic; futex word */
  uint32_t wake_seq;          /* bumped (atomic) and futex-woken on thaw and gate release */
  uint64_t throttle_bps;      /* atomic; 0 = unthrottled; bytes per second */
  uint64_t writes;            /* atomic counter: completed writes/zero/trim */
  uint64_t bytes_written;     /* atomic counter */
  uint64_t throttled_ns;      /* atomic counter: time writes were delayed by the throttle */
  uint64_t frozen_ns;         /* atomic counter: time writes waited on a freeze */
  uint64_t gated_ns;          /* atomic counter: time requests waited on the gate */
  uint64_t inflight;          /* atomic: writes between "started" and "marked" */
  uint64_t owner_pid;         /* pid of the nbdkit serving the disk, 0 when none */
  uint64_t created_unix;      /* seconds since the epoch */
  uint8_t  cookie[BM_COOKIE_SIZE]; /* opaque, set by the orchestrator (resume identity) */
};

/* A snapshot of the header for callers (stable ABI, mirrored in C#). */
struct bm_info {
  uint32_t version;
  uint32_t block_size;
  uint64_t image_size;
  uint64_t blocks;
  uint64_t bitmap_words;
  uint32_t state;
  uint32_t reserved;
  uint64_t throttle_bps;
  uint64_t writes;
  uint64_t bytes_written;
  uint64_t throttled_ns;
  uint64_t frozen_ns;
  uint64_t gated_ns;
  uint64_t inflight;
  uint64_t owner_pid;
  uint64_t dirty_blocks;      /* population count of the dirty bitmap */
  uint64_t gated_blocks;      /* population count of the gate bitmap */
};

typedef struct bm_map bm_map;

/* Creating and opening.  bm_map_create fails (errno EEXIST) when path exists;
 * it creates missing parent directories and publishes the map atomically.
 *
 * Trust: a map must be a regular file (never followed through a symlink)
 * owned by root, by the caller's effective user or by the service user
 * BM_SERVICE_USER, with mode 0600 (no group or other bits; maps are created
 * so); its directory must be owned by one of the same users and not be
 * writable by group or others.  Anything else is refused (errno EPERM, ELOOP
 * or ENOTDIR) with a message naming the file and the fix.  The *_at forms
 * take a directory the caller opened itself (O_DIRECTORY|O_NOFOLLOW) and
 * re-check it; name is a single component; label is used in messages.
 * bm_map_open_fd maps a file the caller opened and takes the descriptor
 * (closed on failure too). */
#define BM_SERVICE_USER "blockmigrate"
/* 1 when uid may own a map or its directory (root, euid, BM_SERVICE_USER). */
int bm_trusted_owner (uint32_t uid);
bm_map *bm_map_create (const char *path, uint64_t image_size, uint32_t block_size);
bm_map *bm_map_open (const char *path);         /* validates magic, version, geometry */
/* Open when present and its geometry matches, create when absent, refuse otherwise. */
bm_map *bm_map_open_or_create (const char *path, uint64_t image_size, uint32_t block_size);
bm_map *bm_map_open_at (int dirfd, const char *name, const char *label);
bm_map *bm_map_open_fd (int fd, const char *label);
bm_map *bm_map_create_at (int dirfd, const char *name, const char *label,
                          uint64_t image_size, uint32_t block_size);
bm_map *bm_map_open_or_create_at (int dirfd, const char *name, const char *label,
                                  uint64_t image_size, uint32_t block_size);
void bm_map_close (bm_map *map);
const char *bm_last_error (void);              /* never NULL; "" before any error */
int bm_valid_block_size (uint64_t block_size);  /* 1 when acceptable */

/* Reading state. */
int bm_map_info (bm_map *map, struct bm_info *out);
/* bm_map_info without dirty_blocks and gated_blocks (left 0): reads the
 * header only, never the bitmaps. */
int bm_map_counters (bm_map *map, struct bm_info *out);
int64_t bm_dirty_count (bm_map *map);
/* Copy words [first_word, first_word+nwords) of the dirty bitmap without clearing. */
int bm_peek (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out);

/* Orchestrator side: take, re-mark. */
/* Atomically exchange words [first_word, first_word+nwords) with 0, copying the old
 * words to out.  Returns the number of set bits taken, -1 on error. */
int64_t bm_take (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out);
/* Atomic OR of bits into words [first_word, ...) (give back what was taken). */
int bm_mark_words (bm_map *map, uint64_t first_word, uint64_t nwords, const uint64_t *bits);
int bm_mark_blocks (bm_map *map, uint64_t first_block, uint64_t nblocks);
/* Mark the blocks touched by [offset, offset+count) (what the filter calls). */
int bm_mark_bytes (bm_map *map, uint64_t offset, uint64_t count);

/* Throttle, freeze. */
int bm_set_throttle (bm_map *map, uint64_t bytes_per_second);
/* Set FROZEN and wait until writes in flight have drained (timeout_ms < 0: forever).
 * On timeout the map is thawed again and -1 returned. */
int bm_freeze (bm_map *map, int timeout_ms);
int bm_thaw (bm_map *map);
int bm_set_state_flags (bm_map *map, uint32_t set, uint32_t clear);
int bm_set_owner (bm_map *map, uint64_t pid);
int bm_get_cookie (bm_map *map, uint8_t out[BM_COOKIE_SIZE]);
int bm_set_cookie (bm_map *map, const uint8_t cookie[BM_COOKIE_SIZE]);

/* Filter side: the write window.  bm_write_begin waits while the map is frozen
 * and then counts the write in flight; bm_write_end marks [offset, offset+count)
 * when ok is non-zero, updates the counters and ends the in-flight window.
 * Neither checks on its fast path that the map file still covers the mapping
 * (the filter does that once per request, before the throttle). */
int bm_write_begin (bm_map *map);
void bm_write_end (bm_map *map, uint64_t offset, uint64_t count, int ok);
void bm_add_throttled_ns (bm_map *map, uint64_t ns);

/* Destination gate. */
int bm_gate_mark_words (bm_map *map, uint64_t first_word, uint64_t nwords, const uint64_t *bits);
int bm_gate_clear_blocks (bm_map *map, uint64_t first_block, uint64_t nblocks); /* wakes waiters */
int bm_gate_peek (bm_map *map, uint64_t first_word, uint64_t nwords, uint64_t *out);
/* Wait until no block of [offset, offset+count) is gated (and GATE_ALL is clear). */
int bm_gate_wait (bm_map *map, uint64_t offset, uint64_t count);

/* Layout self-description, for the C# test that checks its mirror of bm_info. */
size_t bm_info_size (void);
/* Byte offset of a named field of struct bm_info ("block_size", ...), -1 if unknown. */
int64_t bm_info_offset (const char *field);
size_t bm_header_struct_size (void);

#ifdef __cplusplus
}
#endif

#endif /* BLOCKMIGRATE_DIRTYMAP_H */
