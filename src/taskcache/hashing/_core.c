/* taskcache.hashing._core: the compiled route of Flyte's pbhash (objecthash of jsonpb).
 *
 * Owns the wire-format walk only. It reads a message's deterministic serialization, driven by
 * per-message-type plans that taskcache.hashing.plans builds from the protobuf descriptors (JSON
 * key hashes, value kinds, enum names, nested plans, the hashify rule), and computes objecthash
 * digests with SHA-256. Every rule it applies comes from those plans; whatever the plans do not
 * describe (malformed input, closed-enum unknowns, invalid UTF-8, repeated fields split across
 * the wire, a Value without kind) raises Fallback, and the caller re-hashes with the Python route,
 * which gives the answer or the error Go gives. Callback plans hand whole sub-messages (Any,
 * Timestamp, Duration, extendable messages) back to Python. Node digests are deferred and run
 * in batches of independent ones after the walk (see "deferred digests").
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_sha256_portable.h"

#ifdef TASKCACHE_OPENSSL
/* The low-level SHA256_* calls are deprecated in OpenSSL 3 but are libcrypto's cheapest per
 * digest (no EVP context), and objecthash takes one digest per node. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
#endif

/* The SHA-256 in use: "sha-ni" (bundled, x86 SHA extensions), "openssl" or "portable". Chosen
 * at import (the fastest available) and switchable for tests with select_sha256(). */
enum { SHA_SHA_NI = 0, SHA_OPENSSL = 1, SHA_PORTABLE = 2 };
static int sha_backend = SHA_PORTABLE;
static const char *const SHA_BACKEND_NAMES[] = {"sha-ni", "openssl", "portable"};

typedef union {
    tc_sha256_ctx bundled;
#ifdef TASKCACHE_OPENSSL
    SHA256_CTX openssl;
#endif
} sha_ctx;

static inline void sha_init(sha_ctx *ctx) {
#ifdef TASKCACHE_OPENSSL
    if (sha_backend == SHA_OPENSSL) {
        SHA256_Init(&ctx->openssl);
        return;
    }
#endif
    tc_sha256_init(&ctx->bundled);
}

static inline void sha_update(sha_ctx *ctx, const void *data, size_t size) {
#ifdef TASKCACHE_OPENSSL
    if (sha_backend == SHA_OPENSSL) {
        SHA256_Update(&ctx->openssl, data, size);
        return;
    }
#endif
    tc_sha256_update(&ctx->bundled, data, size);
}

static inline void sha_final(uint8_t out[32], sha_ctx *ctx) {
#ifdef TASKCACHE_OPENSSL
    if (sha_backend == SHA_OPENSSL) {
        SHA256_Final(out, &ctx->openssl);
        return;
    }
#endif
    tc_sha256_final(out, &ctx->bundled);
}

/* Makes `name` the SHA-256 in use; returns 0, or -1 when it is not available here. */
static int sha_select(const char *name) {
    if (strcmp(name, "sha-ni") == 0) {
        if (!tc_sha256_select(1)) return -1;
        sha_backend = SHA_SHA_NI;
        return 0;
    }
    if (strcmp(name, "openssl") == 0) {
#ifdef TASKCACHE_OPENSSL
        sha_backend = SHA_OPENSSL;
        return 0;
#else
        return -1;
#endif
    }
    if (strcmp(name, "portable") == 0) {
        tc_sha256_select(0);
        sha_backend = SHA_PORTABLE;
        return 0;
    }
    return -1;
}

/* Message plan modes (taskcache.hashing.plans.Mode). */
enum { MODE_FIELDS = 0, MODE_FIELD_ONE = 1, MODE_ONE_OF = 2, MODE_CALLBACK = 3, MODE_HASHIFY = 4 };
/* Field labels (taskcache.hashing.plans.Label). */
enum { LABEL_SINGULAR = 0, LABEL_REPEATED = 1, LABEL_MAP = 2 };
/* google.protobuf.FieldDescriptor.TYPE_* */
enum {
    T_DOUBLE = 1, T_FLOAT = 2, T_INT64 = 3, T_UINT64 = 4, T_INT32 = 5, T_FIXED64 = 6,
    T_FIXED32 = 7, T_BOOL = 8, T_STRING = 9, T_GROUP = 10, T_MESSAGE = 11, T_BYTES = 12,
    T_UINT32 = 13, T_ENUM = 14, T_SFIXED32 = 15, T_SFIXED64 = 16, T_SINT32 = 17, T_SINT64 = 18
};

#define MAX_PRUNED 8
#define MAX_FIELDS 512

typedef struct FieldPlan {
    uint32_t number;
    int type;
    int label;
    int sub; /* message plan index, or -1 */
    int closed_enum;
    int null_enum;
    int map_key_type;
    uint8_t key[32];
    Py_ssize_t n_enum;
    int32_t *enum_numbers; /* sorted */
    uint8_t *enum_hashes;  /* 32 bytes per name */
    struct FieldPlan *map_value;
} FieldPlan;

typedef struct {
    int mode;
    Py_ssize_t n_fields;
    FieldPlan *fields;
    uint32_t max_number;
    int32_t *by_number; /* field number -> index in fields, or -1 */
    PyObject *callback;
    uint32_t override_number;
    uint8_t override_key[32];
    Py_ssize_t n_pruned;
    uint32_t pruned_number[MAX_PRUNED];
    int pruned_sub[MAX_PRUNED];
    uint8_t pruned_key[MAX_PRUNED][32];
    int normal;
} MessagePlan;

typedef struct {
    Py_ssize_t n_messages;
    MessagePlan *messages;
} Table;

static PyObject *FallbackError;
static PyObject *float32_converter; /* float -> float: Go's float32 text read back as double */

static uint8_t NIL_HASH[32], TRUE_HASH[32], FALSE_HASH[32], EMPTY_DICT_HASH[32],
    EMPTY_LIST_HASH[32], EMPTY_STRING_HASH[32];

static int fallback(const char *reason) {
    PyErr_SetString(FallbackError, reason);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* objecthash leaves */

/* Big-endian stores, written out so that they hold on any host (compilers emit bswap). */
static inline void put_be32(uint8_t *p, uint32_t value) {
    p[0] = (uint8_t)(value >> 24);
    p[1] = (uint8_t)(value >> 16);
    p[2] = (uint8_t)(value >> 8);
    p[3] = (uint8_t)value;
}

static void store_state(const uint32_t state[8], uint8_t out[32]) {
    for (int i = 0; i < 8; i++) put_be32(out + 4 * i, state[i]);
}

/* The message's last `used` (at most 119) bytes stand in block[0:used]: pad them with the
 * message length of `bits` to one or two blocks, compress those and write the digest. */
static inline void sha_pad_final(uint32_t state[8], uint8_t block[128], size_t used,
                                 uint64_t bits, uint8_t out[32]) {
    block[used++] = 0x80;
    size_t total = used <= 56 ? 64 : 128;
    memset(block + used, 0, total - 8 - used);
    put_be32(block + total - 8, (uint32_t)(bits >> 32));
    put_be32(block + total - 4, (uint32_t)bits);
    tc_sha256_blocks(state, block, total / 64);
    store_state(state, out);
}

/* sha256(tag || data): the objecthash node digest. On the bundled code the message is
 * compressed straight from `data` (no context buffering): one block for most nodes. */
static void sha_tagged(uint8_t tag, const void *data, size_t size, uint8_t out[32]) {
    if (sha_backend == SHA_OPENSSL) {
        sha_ctx ctx;
        sha_init(&ctx);
        sha_update(&ctx, &tag, 1);
        if (size) sha_update(&ctx, data, size);
        sha_final(out, &ctx);
        return;
    }
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const uint8_t *bytes = (const uint8_t *)data;
    uint64_t bits = (uint64_t)(size + 1) * 8;
    uint32_t state[8];
    uint8_t block[128];
    memcpy(state, initial, sizeof state);
    block[0] = tag;
    if (size <= 118) {
        /* One or two blocks (single-entry dicts are 65 bytes): one call of the block function. */
        if (size) memcpy(block + 1, bytes, size);
        sha_pad_final(state, block, size + 1, bits, out);
        return;
    }
    /* Longer: the tag and 63 bytes, then whole blocks straight from `data`, then the tail. */
    memcpy(block + 1, bytes, 63);
    tc_sha256_blocks(state, block, 1);
    bytes += 63;
    size -= 63;
    if (size >= 64) {
        tc_sha256_blocks(state, bytes, size / 64);
        bytes += size & ~(size_t)63;
        size &= 63;
    }
    if (size) memcpy(block, bytes, size);
    sha_pad_final(state, block, size, bits, out);
}

/* ------------------------------------------------------------------------------------------ */
/* deferred digests: one walk's jobs, computed level by level */

/* A node's digest is not computed where the walker meets the node: the walker records a job
 * (tag and inputs) and the jobs run afterwards, level by level. A job's level is one more than
 * its deepest pending input's, so the jobs of one level are independent of each other and the
 * SHA-NI path compresses two of them at once, interleaved (one chain of sha256rnds2 is
 * latency-bound). Most objecthash nodes are one or two blocks long and a list or a map holds
 * many independent ones. Pending jobs run whenever FLUSH_JOBS of them have accumulated, which
 * bounds the walk's memory; the digests they computed stay where the jobs wrote them. */
#define FLUSH_JOBS 2048
#define ARENA_CHUNK (64 * 1024)
/* What a small message (a task's few inputs) needs, kept in the walk itself, on the stack: a
 * malloc per digest call would cost more than its hashing. */
#define INLINE_ARENA 4096
#define INLINE_JOBS 64
#define INLINE_BUFFER 512

typedef struct {
    const uint8_t *hash; /* 32 bytes, valid once the jobs up to `level` have run */
    int level;           /* 0: valid now */
} Digest;

enum { JOB_RAW = 0, JOB_LIST = 1, JOB_DICT = 2 };

typedef struct {
    uint8_t *out;
    const void *input; /* RAW: n bytes; LIST: n digests; DICT: n (key, value) digest pairs */
    size_t n;
    int level;
    uint8_t kind, tag;
} Job;

typedef struct ArenaChunk {
    struct ArenaChunk *next;
    size_t used, size;
    _Alignas(16) uint8_t data[];
} ArenaChunk;

/* Two messages in flight: the second hides the first one's round latency, and more did not
 * pay on the machines measured (bench/analysis.md, P4). */
#define LANES 2

typedef struct {
    ArenaChunk *arena; /* digests and job inputs: never moved until the walk ends */
    size_t inline_used;
    Job *jobs;
    Py_ssize_t n_jobs, job_capacity;
    int floor;     /* jobs up to this level have run */
    int max_level; /* highest level pending */
    uint8_t *buffers[LANES];
    size_t capacities[LANES];
    _Alignas(16) uint8_t inline_arena[INLINE_ARENA];
    Job inline_jobs[INLINE_JOBS];
    uint8_t inline_buffers[LANES][INLINE_BUFFER];
} Walk;

/* Whether digests are deferred and batched (1) or computed one at a time where the walker
 * meets them (0, for tests: both must give the same digests). */
static int batching = 1;

static const uint32_t SHA256_INITIAL[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                           0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};

static void walk_init(Walk *w) {
    w->arena = NULL;
    w->inline_used = 0;
    w->jobs = w->inline_jobs;
    w->n_jobs = 0;
    w->job_capacity = INLINE_JOBS;
    w->floor = w->max_level = 0;
    for (int lane = 0; lane < LANES; lane++) {
        w->buffers[lane] = w->inline_buffers[lane];
        w->capacities[lane] = INLINE_BUFFER;
    }
}

static void walk_free(Walk *w) {
    while (w->arena != NULL) {
        ArenaChunk *next = w->arena->next;
        PyMem_Free(w->arena);
        w->arena = next;
    }
    if (w->jobs != w->inline_jobs) PyMem_Free(w->jobs);
    for (int lane = 0; lane < LANES; lane++)
        if (w->buffers[lane] != w->inline_buffers[lane]) PyMem_Free(w->buffers[lane]);
}

static void *arena_alloc(Walk *w, size_t size) {
    size = (size + 15) & ~(size_t)15;
    if (w->arena == NULL && INLINE_ARENA - w->inline_used >= size) {
        void *block = w->inline_arena + w->inline_used;
        w->inline_used += size;
        return block;
    }
    ArenaChunk *chunk = w->arena;
    if (chunk == NULL || chunk->size - chunk->used < size) {
        size_t capacity = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        chunk = PyMem_Malloc(sizeof(ArenaChunk) + capacity);
        if (chunk == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        chunk->next = w->arena;
        chunk->used = 0;
        chunk->size = capacity;
        w->arena = chunk;
    }
    void *block = chunk->data + chunk->used;
    chunk->used += size;
    return block;
}

/* A digest known now: a constant of the module or the plans, which outlive the walk. */
static int digest_constant(const uint8_t *hash, Digest *out) {
    out->hash = hash;
    out->level = 0;
    return 0;
}

/* A 32-byte slot for a digest known now; NULL when out of memory. */
static uint8_t *digest_now(Walk *w, Digest *out) {
    uint8_t *slot = arena_alloc(w, 32);
    out->hash = slot;
    out->level = 0;
    return slot;
}

static const uint8_t *job_digest(const Job *job, size_t i) {
    return ((const uint8_t *const *)job->input)[i];
}

static int compare_entries(const void *a, const void *b) { return memcmp(a, b, 64); }

/* Sorts a dict's 64-byte `key hash || value hash` entries, as objecthash orders them. */
static void sort_entries(uint8_t *data, size_t n) {
    if (n > 12) {
        qsort(data, n, 64, compare_entries);
        return;
    }
    for (size_t i = 1; i < n; i++) {
        uint8_t held[64];
        memcpy(held, data + 64 * i, 64);
        size_t j = i;
        while (j > 0 && memcmp(data + 64 * (j - 1), held, 64) > 0) {
            memcpy(data + 64 * j, data + 64 * (j - 1), 64);
            j--;
        }
        memcpy(data + 64 * j, held, 64);
    }
}

/* Writes a job's message (tag || content, dict entries sorted) to the lane's buffer and pads
 * it in place to *blocks blocks; returns its length, or -1 when out of memory. */
static Py_ssize_t assemble(Walk *w, int lane, const Job *job, size_t *blocks) {
    size_t unit = job->kind == JOB_RAW ? 1 : job->kind == JOB_LIST ? 32 : 64;
    size_t length = 1 + unit * job->n;
    size_t needed = length + 72;
    if (w->capacities[lane] < needed) {
        size_t capacity = needed < 4096 ? 4096 : needed;
        uint8_t *buffer = PyMem_Malloc(capacity);
        if (buffer == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (w->buffers[lane] != w->inline_buffers[lane]) PyMem_Free(w->buffers[lane]);
        w->buffers[lane] = buffer;
        w->capacities[lane] = capacity;
    }
    uint8_t *buffer = w->buffers[lane];
    /* Most messages are one or two blocks: zeroing a fixed 128 bytes is a few stores where
     * zeroing the exact padding would be a call. */
    if (length <= 119) memset(buffer, 0, 128);
    buffer[0] = job->tag;
    if (job->kind == JOB_RAW) {
        if (job->n) memcpy(buffer + 1, job->input, job->n);
    } else if (job->kind == JOB_LIST) {
        for (size_t i = 0; i < job->n; i++) memcpy(buffer + 1 + 32 * i, job_digest(job, i), 32);
    } else {
        for (size_t i = 0; i < 2 * job->n; i++) memcpy(buffer + 1 + 32 * i, job_digest(job, i), 32);
        if (job->n > 1) sort_entries(buffer + 1, job->n);
    }
    uint64_t bits = (uint64_t)length * 8;
    size_t total = (length + 9 + 63) & ~(size_t)63;
    buffer[length] = 0x80;
    if (length > 119) memset(buffer + length + 1, 0, total - 8 - length - 1);
    put_be32(buffer + total - 8, (uint32_t)(bits >> 32));
    put_be32(buffer + total - 4, (uint32_t)bits);
    *blocks = total / 64;
    return (Py_ssize_t)length;
}

typedef struct {
    const Job *job; /* NULL: idle */
    const uint8_t *block;
    size_t left; /* blocks still to compress */
    uint32_t state[8];
} Lane;

/* Starts the next of jobs[*next:count] on `lane`, or leaves it idle; -1 when out of memory. */
static int lane_start(Walk *w, int lane, Lane *l, Job *const *jobs, Py_ssize_t *next,
                      Py_ssize_t count) {
    l->job = NULL;
    l->left = 0;
    if (*next >= count) return 0;
    const Job *job = jobs[(*next)++];
    if (assemble(w, lane, job, &l->left) < 0) return -1;
    l->job = job;
    l->block = w->buffers[lane];
    memcpy(l->state, SHA256_INITIAL, sizeof l->state);
    return 0;
}

/* Computes independent jobs (one level's): on the bundled SHA-256 two at a time, a block of
 * each per step; on libcrypto one after the other. */
static int run_jobs(Walk *w, Job *const *jobs, Py_ssize_t count) {
    if (sha_backend == SHA_OPENSSL) {
        for (Py_ssize_t i = 0; i < count; i++) {
            size_t blocks;
            Py_ssize_t length = assemble(w, 0, jobs[i], &blocks);
            if (length < 0) return -1;
            sha_tagged(w->buffers[0][0], w->buffers[0] + 1, (size_t)length - 1, jobs[i]->out);
        }
        return 0;
    }
    Lane lanes[LANES];
    Py_ssize_t next = 0;
    for (int lane = 0; lane < LANES; lane++)
        if (lane_start(w, lane, &lanes[lane], jobs, &next, count) < 0) return -1;
    while (lanes[0].job != NULL || lanes[1].job != NULL) {
        if (lanes[0].job != NULL && lanes[1].job != NULL) {
            tc_sha256_pair(lanes[0].state, lanes[0].block, lanes[1].state, lanes[1].block);
            for (int lane = 0; lane < LANES; lane++) {
                lanes[lane].block += 64;
                lanes[lane].left--;
            }
        } else {
            /* The other lane is idle, so no job is left to start: finish this one. */
            Lane *l = lanes[0].job != NULL ? &lanes[0] : &lanes[1];
            tc_sha256_blocks(l->state, l->block, l->left);
            l->left = 0;
        }
        for (int lane = 0; lane < LANES; lane++) {
            if (lanes[lane].job != NULL && lanes[lane].left == 0) {
                store_state(lanes[lane].state, lanes[lane].job->out);
                if (lane_start(w, lane, &lanes[lane], jobs, &next, count) < 0) return -1;
            }
        }
    }
    return 0;
}

/* Runs every pending job, lowest level first. */
static int flush(Walk *w) {
    if (w->n_jobs == 0) return 0;
    int levels = w->max_level - w->floor;
    Py_ssize_t inline_starts[INLINE_JOBS + 2] = {0};
    Job *inline_order[INLINE_JOBS];
    int small = levels <= INLINE_JOBS && w->n_jobs <= INLINE_JOBS;
    Py_ssize_t *starts =
        small ? inline_starts : PyMem_Calloc((size_t)levels + 2, sizeof(Py_ssize_t));
    Job **order = small ? inline_order : PyMem_Malloc(sizeof(Job *) * (size_t)w->n_jobs);
    int status = 0;
    if (starts == NULL || order == NULL) {
        PyErr_NoMemory();
        status = -1;
    } else {
        /* Counting sort by level; within a level in walk order. */
        for (Py_ssize_t i = 0; i < w->n_jobs; i++) starts[w->jobs[i].level - w->floor + 1]++;
        for (int level = 1; level <= levels + 1; level++) starts[level] += starts[level - 1];
        for (Py_ssize_t i = 0; i < w->n_jobs; i++)
            order[starts[w->jobs[i].level - w->floor]++] = &w->jobs[i];
        Py_ssize_t begin = 0;
        for (int level = 1; level <= levels && status == 0; level++) {
            Py_ssize_t end = starts[level];
            status = run_jobs(w, order + begin, end - begin);
            begin = end;
        }
    }
    if (!small) {
        PyMem_Free(starts);
        PyMem_Free(order);
    }
    w->floor = w->max_level;
    w->n_jobs = 0;
    return status;
}

/* Records the job computing `out` from `input` (kind, tag, n as in Job), whose deepest pending
 * input is at `input_level`; computes it at once when not batching. */
static int add_job(Walk *w, int kind, uint8_t tag, const void *input, size_t n, int input_level,
                   Digest *out) {
    uint8_t *slot = digest_now(w, out);
    if (slot == NULL) return -1;
    Job job = {slot, input, n, (input_level > w->floor ? input_level : w->floor) + 1,
               (uint8_t)kind, tag};
    if (!batching) {
        size_t blocks;
        Py_ssize_t length = assemble(w, 0, &job, &blocks);
        if (length < 0) return -1;
        sha_tagged(tag, w->buffers[0] + 1, (size_t)length - 1, slot);
        return 0;
    }
    if (w->n_jobs == w->job_capacity) {
        Py_ssize_t capacity = 2 * w->job_capacity;
        Job *jobs = PyMem_Malloc(sizeof(Job) * (size_t)capacity);
        if (jobs == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(jobs, w->jobs, sizeof(Job) * (size_t)w->n_jobs);
        if (w->jobs != w->inline_jobs) PyMem_Free(w->jobs);
        w->jobs = jobs;
        w->job_capacity = capacity;
    }
    w->jobs[w->n_jobs++] = job;
    if (job.level > w->max_level) w->max_level = job.level;
    out->level = job.level;
    return w->n_jobs >= FLUSH_JOBS ? flush(w) : 0;
}

/* sha256(tag || data): a leaf. `data` is copied unless `stable` (it outlives the walk). */
static int leaf(Walk *w, uint8_t tag, const void *data, size_t size, int stable, Digest *out) {
    if (!batching) {
        uint8_t *slot = digest_now(w, out);
        if (slot == NULL) return -1;
        sha_tagged(tag, data, size, slot);
        return 0;
    }
    if (!stable && size) {
        void *copy = arena_alloc(w, size);
        if (copy == NULL) return -1;
        memcpy(copy, data, size);
        data = copy;
    }
    return add_job(w, JOB_RAW, tag, data, size, 0, out);
}

/* The digests a list or a dict is made of, gathered while the walker reads its elements. */
typedef struct {
    const uint8_t **items;
    Py_ssize_t length, capacity;
    int level; /* deepest item's */
    const uint8_t *inline_items[32];
} Parts;

static void parts_init(Parts *parts) {
    parts->items = parts->inline_items;
    parts->length = 0;
    parts->capacity = 32;
    parts->level = 0;
}

static void parts_free(Parts *parts) {
    if (parts->items != parts->inline_items) PyMem_Free(parts->items);
}

static int parts_add(Parts *parts, const Digest *digest) {
    if (parts->length == parts->capacity) {
        Py_ssize_t capacity = 2 * parts->capacity;
        const uint8_t **items = PyMem_Malloc(sizeof(uint8_t *) * (size_t)capacity);
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(items, parts->items, sizeof(uint8_t *) * (size_t)parts->length);
        parts_free(parts);
        parts->items = items;
        parts->capacity = capacity;
    }
    parts->items[parts->length++] = digest->hash;
    if (digest->level > parts->level) parts->level = digest->level;
    return 0;
}

static int parts_add_entry(Parts *parts, const Digest *key, const Digest *value) {
    return parts_add(parts, key) < 0 ? -1 : parts_add(parts, value);
}

/* The job hashing `parts` as a list ('l', digests in order) or a dict ('d', sorted pairs). */
static int parts_job(Walk *w, const Parts *parts, int kind, Digest *out) {
    size_t size = sizeof(uint8_t *) * (size_t)parts->length;
    const uint8_t **input = arena_alloc(w, size ? size : 1);
    if (input == NULL) return -1;
    if (parts->length == 2) { /* a single-entry dict, the commonest: no call */
        input[0] = parts->items[0];
        input[1] = parts->items[1];
    } else if (size) {
        memcpy(input, parts->items, size);
    }
    size_t n = kind == JOB_DICT ? (size_t)parts->length / 2 : (size_t)parts->length;
    return add_job(w, kind, kind == JOB_DICT ? 'd' : 'l', input, n, parts->level, out);
}

/* ------------------------------------------------------------------------------------------ */
/* objecthash leaves */

/* Writes the decimal digits of `value` ending at `end`; returns where they start. */
static char *decimal_digits(uint64_t value, char *end) {
    do {
        *--end = (char)('0' + value % 10);
        value /= 10;
    } while (value);
    return end;
}

/* `text` is a literal: it outlives the walk. */
static int hash_text(Walk *w, const char *text, Digest *out) {
    return leaf(w, 'u', text, strlen(text), 1, out);
}

/* objecthash's normalized double: sign, binary exponent with the mantissa in (0.5, 1], bits. */
static int hash_number(Walk *w, double value, Digest *out) {
    if (isnan(value)) return leaf(w, 'f', "NaN", 3, 1, out);
    if (isinf(value)) {
        if (value > 0) return leaf(w, 'f', "Infinity", 8, 1, out);
        return leaf(w, 'f', "-Infinity", 9, 1, out);
    }
    if (value == 0) return leaf(w, 'f', "+0:", 3, 1, out);
    /* A double has at most 53 significant bits and a 5-digit exponent: far below objecthash's
     * 1 000-character limit, which therefore never applies here. */
    char text[128];
    size_t length = 0;
    double f = value;
    if (f < 0) {
        text[length++] = '-';
        f = -f;
    } else {
        text[length++] = '+';
    }
    int exponent;
    f = frexp(f, &exponent); /* f in [0.5, 1) */
    if (f == 0.5) {
        f = 1.0;
        exponent -= 1;
    }
    if (exponent < 0) text[length++] = '-';
    {
        char digits[8];
        char *end = digits + sizeof digits;
        char *start = decimal_digits((uint64_t)(exponent < 0 ? -exponent : exponent), end);
        memcpy(text + length, start, (size_t)(end - start));
        length += (size_t)(end - start);
    }
    text[length++] = ':';
    while (f != 0) {
        if (f >= 1) {
            text[length++] = '1';
            f -= 1;
        } else {
            text[length++] = '0';
        }
        f *= 2;
    }
    return leaf(w, 'f', text, length, 0, out);
}

static int hash_double_field(Walk *w, double value, Digest *out) {
    if (isnan(value)) return hash_text(w, "NaN", out);
    if (isinf(value)) return hash_text(w, value > 0 ? "Infinity" : "-Infinity", out);
    return hash_number(w, value, out);
}

static int hash_float_field(Walk *w, float value, Digest *out) {
    if (isnan(value) || isinf(value) || value == 0)
        return hash_double_field(w, (double)value, out);
    PyObject *argument = PyFloat_FromDouble((double)value);
    if (argument == NULL) return -1;
    PyObject *result = PyObject_CallOneArg(float32_converter, argument);
    Py_DECREF(argument);
    if (result == NULL) return -1;
    double converted = PyFloat_AsDouble(result);
    Py_DECREF(result);
    if (converted == -1.0 && PyErr_Occurred()) return -1;
    return hash_double_field(w, converted, out);
}

static int hash_signed_text(Walk *w, int64_t value, Digest *out) {
    char text[24];
    char *end = text + sizeof text;
    uint64_t magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
    char *start = decimal_digits(magnitude, end);
    if (value < 0) *--start = '-';
    return leaf(w, 'u', start, (size_t)(end - start), 0, out);
}

static int hash_unsigned_text(Walk *w, uint64_t value, Digest *out) {
    char text[24];
    char *end = text + sizeof text;
    char *start = decimal_digits(value, end);
    return leaf(w, 'u', start, (size_t)(end - start), 0, out);
}

/* The values of zigzag-encoded (sint64, sint32) raw bits. */
static inline int64_t zigzag64(uint64_t bits) {
    return (int64_t)((bits >> 1) ^ (~(bits & 1) + 1));
}

static inline int32_t zigzag32(uint32_t bits) {
    return (int32_t)((bits >> 1) ^ (~(bits & 1) + 1));
}

/* Hash of the raw bits of a 64-bit integer field (int64, sint64, sfixed64, uint64, fixed64) as
 * its decimal text: how protojson writes a 64-bit value and fmt.Sprint a map key alike. */
static int hash_integer64_text(Walk *w, int type, uint64_t bits, Digest *out) {
    if (type == T_UINT64 || type == T_FIXED64) return hash_unsigned_text(w, bits, out);
    if (type == T_SINT64) return hash_signed_text(w, zigzag64(bits), out);
    return hash_signed_text(w, (int64_t)bits, out);
}

/* Strict UTF-8, as Python's decoder: no overlongs, surrogates or code points past U+10FFFF. */
static int valid_utf8(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t extra;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            extra = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            extra = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            extra = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + extra >= n) return 0; /* truncated sequence */
        for (size_t k = 1; k <= extra; k++) {
            uint8_t next = p[i + k];
            if ((next & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (next & 0x3F);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        i += extra + 1;
    }
    return 1;
}

/* 0, or Fallback unless p[0:n] is valid UTF-8. */
static int check_utf8(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (p[i] >= 0x80) {
            if (!valid_utf8(p + i, n - i)) return fallback("string is not valid UTF-8");
            break;
        }
    }
    return 0;
}

/* `p` lies in the message being hashed, which outlives the walk. */
static int hash_string(Walk *w, const uint8_t *p, size_t n, Digest *out) {
    if (check_utf8(p, n) < 0) return -1;
    return leaf(w, 'u', p, n, 1, out);
}

static const char BASE64_STANDARD[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char BASE64_URLSAFE[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Writes base64 of p[0:n] to text; returns its length. */
static size_t base64_encode(const uint8_t *p, size_t n, const char *alphabet, int pad, char *text) {
    size_t length = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        text[length++] = alphabet[(v >> 18) & 63];
        text[length++] = alphabet[(v >> 12) & 63];
        text[length++] = alphabet[(v >> 6) & 63];
        text[length++] = alphabet[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        text[length++] = alphabet[(v >> 18) & 63];
        text[length++] = alphabet[(v >> 12) & 63];
        if (i + 1 < n)
            text[length++] = alphabet[(v >> 6) & 63];
        else if (pad)
            text[length++] = '=';
        if (pad) text[length++] = '=';
    }
    return length;
}

static int hash_bytes_field(Walk *w, const uint8_t *p, size_t n, Digest *out) {
    char small[256];
    size_t needed = 4 * ((n + 2) / 3);
    char *text = needed <= sizeof small ? small : PyMem_Malloc(needed);
    if (text == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    size_t length = base64_encode(p, n, BASE64_STANDARD, 1, text);
    int status = leaf(w, 'u', text, length, 0, out);
    if (text != small) PyMem_Free(text);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* wire format */

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (*p >= end) return 0;
        uint8_t byte = *(*p)++;
        result |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) {
            *value = result;
            return 1;
        }
    }
    return 0;
}

static int read_length(const uint8_t **p, const uint8_t *end, size_t *length) {
    uint64_t value;
    if (!read_varint(p, end, &value) || value > (uint64_t)(end - *p)) return 0;
    *length = (size_t)value;
    return 1;
}

static uint64_t load_le(const uint8_t *p, int size) {
    uint64_t value = 0;
    for (int i = size - 1; i >= 0; i--) value = (value << 8) | p[i];
    return value;
}

static int skip_value(const uint8_t **p, const uint8_t *end, int wire_type) {
    uint64_t ignored;
    size_t length;
    switch (wire_type) {
        case 0:
            return read_varint(p, end, &ignored);
        case 1:
            if (end - *p < 8) return 0;
            *p += 8;
            return 1;
        case 2:
            if (!read_length(p, end, &length)) return 0;
            *p += length;
            return 1;
        case 5:
            if (end - *p < 4) return 0;
            *p += 4;
            return 1;
        default: /* groups are described by callback plans, never walked here */
            return 0;
    }
}

static int scalar_wire_type(int type) {
    switch (type) {
        case T_DOUBLE:
        case T_FIXED64:
        case T_SFIXED64:
            return 1;
        case T_FLOAT:
        case T_FIXED32:
        case T_SFIXED32:
            return 5;
        case T_STRING:
        case T_BYTES:
        case T_MESSAGE:
            return 2;
        case T_GROUP:
            return 3;
        default:
            return 0;
    }
}

static int packable(int type) {
    return type != T_STRING && type != T_BYTES && type != T_MESSAGE && type != T_GROUP;
}

static int wire_compatible(const FieldPlan *field, int wire_type) {
    if (field->label == LABEL_MAP) return wire_type == 2;
    if (wire_type == scalar_wire_type(field->type)) return 1;
    return field->label == LABEL_REPEATED && wire_type == 2 && packable(field->type);
}

/* ------------------------------------------------------------------------------------------ */
/* values */

static int hash_message(Walk *w, const Table *table, int index, const uint8_t *p, size_t n,
                        PyObject *ignore, Digest *out);

static int hash_enum(Walk *w, const FieldPlan *field, int32_t number, Digest *out) {
    if (field->null_enum) return digest_constant(NIL_HASH, out);
    Py_ssize_t low = 0, high = field->n_enum - 1;
    while (low <= high) {
        Py_ssize_t middle = (low + high) / 2;
        int32_t candidate = field->enum_numbers[middle];
        if (candidate == number) return digest_constant(field->enum_hashes + 32 * middle, out);
        if (candidate < number)
            low = middle + 1;
        else
            high = middle - 1;
    }
    if (field->closed_enum) return fallback("closed enum value outside its enum");
    return hash_number(w, (double)number, out);
}

/* Hash of a non-length-delimited value given its raw bits (varint, fixed32 or fixed64). */
static int hash_scalar_bits(Walk *w, const FieldPlan *field, uint64_t bits, Digest *out) {
    switch (field->type) {
        case T_DOUBLE: {
            double value;
            memcpy(&value, &bits, 8);
            return hash_double_field(w, value, out);
        }
        case T_FLOAT: {
            uint32_t low = (uint32_t)bits;
            float value;
            memcpy(&value, &low, 4);
            return hash_float_field(w, value, out);
        }
        case T_INT64:
        case T_SFIXED64:
        case T_SINT64:
        case T_UINT64:
        case T_FIXED64:
            return hash_integer64_text(w, field->type, bits, out);
        case T_INT32:
        case T_SFIXED32:
            return hash_number(w, (double)(int32_t)(uint32_t)bits, out);
        case T_UINT32:
        case T_FIXED32:
            return hash_number(w, (double)(uint32_t)bits, out);
        case T_SINT32:
            return hash_number(w, (double)zigzag32((uint32_t)bits), out);
        case T_BOOL:
            return digest_constant(bits ? TRUE_HASH : FALSE_HASH, out);
        case T_ENUM:
            return hash_enum(w, field, (int32_t)(uint32_t)bits, out);
        default:
            return fallback("unexpected scalar type");
    }
}

/* Hash of one value of `field` read from the wire at *p (wire type already checked). */
static int hash_value(Walk *w, const Table *table, const FieldPlan *field, int wire_type,
                      const uint8_t **p, const uint8_t *end, Digest *out) {
    uint64_t bits;
    size_t length;
    switch (wire_type) {
        case 0:
            if (!read_varint(p, end, &bits)) return fallback("truncated varint");
            return hash_scalar_bits(w, field, bits, out);
        case 1:
            if (end - *p < 8) return fallback("truncated fixed64");
            bits = load_le(*p, 8);
            *p += 8;
            return hash_scalar_bits(w, field, bits, out);
        case 5:
            if (end - *p < 4) return fallback("truncated fixed32");
            bits = load_le(*p, 4);
            *p += 4;
            return hash_scalar_bits(w, field, bits, out);
        case 2: {
            if (!read_length(p, end, &length)) return fallback("truncated length");
            const uint8_t *data = *p;
            *p += length;
            if (field->type == T_MESSAGE)
                return hash_message(w, table, field->sub, data, length, NULL, out);
            if (field->type == T_STRING) return hash_string(w, data, length, out);
            if (field->type == T_BYTES) return hash_bytes_field(w, data, length, out);
            return fallback("length-delimited scalar");
        }
        default:
            return fallback("unexpected wire type");
    }
}

/* Hash of a field's value when the wire leaves it out (map entries, wrappers). */
static int hash_default(Walk *w, const Table *table, const FieldPlan *field, Digest *out) {
    if (field->label == LABEL_REPEATED) return digest_constant(EMPTY_LIST_HASH, out);
    if (field->label == LABEL_MAP) return digest_constant(EMPTY_DICT_HASH, out);
    switch (field->type) {
        case T_MESSAGE:
            return hash_message(w, table, field->sub, (const uint8_t *)"", 0, NULL, out);
        case T_STRING:
        case T_BYTES:
            return digest_constant(EMPTY_STRING_HASH, out);
        default:
            return hash_scalar_bits(w, field, 0, out);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* dicts: key hash || value hash entries, sorted when their job runs */

/* Hashes of short string map keys, memoized as the Python route memoizes hash_key: input
 * names and struct keys repeat on every call. Direct-mapped; only touched with the GIL held. */
#define KEY_CACHE_SLOTS 512
#define KEY_CACHE_MAX_LENGTH 31
typedef struct {
    uint8_t length; /* 0: empty slot (the empty key is not cached) */
    uint8_t text[KEY_CACHE_MAX_LENGTH];
    uint8_t hash[32];
} KeyCacheSlot;
static KeyCacheSlot key_cache[KEY_CACHE_SLOTS];

/* The key's digest is computed now (the cache needs it) and copied: a later key may take its
 * cache slot while the walk still refers to it. */
static int hash_string_key(Walk *w, const uint8_t *text, size_t n, Digest *out) {
    if (n == 0 || n > KEY_CACHE_MAX_LENGTH) return hash_string(w, text, n, out);
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ text[i]) * 16777619u;
    KeyCacheSlot *slot = &key_cache[h & (KEY_CACHE_SLOTS - 1)];
    uint8_t *digest = digest_now(w, out);
    if (digest == NULL) return -1;
    if (slot->length == n && memcmp(slot->text, text, n) == 0) {
        memcpy(digest, slot->hash, 32);
        return 0;
    }
    if (check_utf8(text, n) < 0) return -1;
    sha_tagged('u', text, n, digest);
    slot->length = (uint8_t)n;
    memcpy(slot->text, text, n);
    memcpy(slot->hash, digest, 32);
    return 0;
}

/* fmt.Sprint of a map key, hashed as a string. */
static int hash_map_key(Walk *w, int type, int present, uint64_t bits, const uint8_t *text,
                        size_t n, Digest *out) {
    if (type == T_STRING)
        return hash_string_key(w, present ? text : (const uint8_t *)"", present ? n : 0, out);
    switch (type) {
        case T_BOOL:
            return hash_text(w, bits ? "true" : "false", out);
        case T_INT64:
        case T_SFIXED64:
        case T_SINT64:
        case T_UINT64:
        case T_FIXED64:
            return hash_integer64_text(w, type, bits, out);
        case T_INT32:
        case T_SFIXED32:
            return hash_signed_text(w, (int32_t)(uint32_t)bits, out);
        case T_SINT32:
            return hash_signed_text(w, zigzag32((uint32_t)bits), out);
        case T_UINT32:
        case T_FIXED32:
            return hash_unsigned_text(w, (uint32_t)bits, out);
        default:
            return fallback("unexpected map key type");
    }
}

/* Adds one map entry (a MapEntry message at data[0:n]) to `entries`, unless its key is ignored.
 * Sets *added to whether it did. */
static int add_map_entry(Walk *w, const Table *table, const FieldPlan *field, const uint8_t *data,
                         size_t n, PyObject *ignore, Parts *entries, int *added) {
    const uint8_t *p = data, *end = data + n;
    int key_present = 0, value_present = 0, value_wire_type = 0;
    uint64_t key_bits = 0;
    const uint8_t *key_text = NULL, *value_at = NULL;
    size_t key_length = 0;
    int key_wire_type = scalar_wire_type(field->map_key_type);
    const FieldPlan *value_field = field->map_value;
    *added = 0;
    while (p < end) {
        uint64_t tag;
        if (!read_varint(&p, end, &tag)) return fallback("truncated map entry");
        uint32_t number = (uint32_t)(tag >> 3);
        int wire_type = (int)(tag & 7);
        if (number == 1 && wire_type == key_wire_type) {
            key_present = 1;
            if (wire_type == 2) {
                if (!read_length(&p, end, &key_length)) return fallback("truncated map key");
                key_text = p;
                p += key_length;
            } else if (wire_type == 0) {
                if (!read_varint(&p, end, &key_bits)) return fallback("truncated map key");
            } else {
                int size = wire_type == 1 ? 8 : 4;
                if (end - p < size) return fallback("truncated map key");
                key_bits = load_le(p, size);
                p += size;
            }
        } else if (number == 2 && wire_compatible(value_field, wire_type)) {
            value_present = 1;
            value_at = p;
            value_wire_type = wire_type;
            if (!skip_value(&p, end, wire_type)) return fallback("truncated map value");
        } else if (!skip_value(&p, end, wire_type)) {
            return fallback("malformed map entry");
        }
    }
    if (ignore != NULL && field->map_key_type == T_STRING) {
        PyObject *name = PyUnicode_DecodeUTF8((const char *)(key_present ? key_text : (const uint8_t *)""),
                                              (Py_ssize_t)(key_present ? key_length : 0), "strict");
        if (name == NULL) {
            PyErr_Clear();
            return fallback("map key is not valid UTF-8");
        }
        int ignored = PySet_Contains(ignore, name);
        Py_DECREF(name);
        if (ignored < 0) return -1;
        if (ignored) return 0;
    }
    Digest key, value;
    if (hash_map_key(w, field->map_key_type, key_present, key_bits, key_text, key_length, &key) <
        0)
        return -1;
    if (value_present) {
        const uint8_t *q = value_at;
        if (hash_value(w, table, value_field, value_wire_type, &q, end, &value) < 0) return -1;
    } else if (hash_default(w, table, value_field, &value) < 0) {
        return -1;
    }
    if (parts_add_entry(entries, &key, &value) < 0) return -1;
    *added = 1;
    return 0;
}

/* Walks the fields of a message, adding `key hash || value hash` per present field to
 * `entries`. `ignore` (a set of names, or NULL) drops entries of string-keyed maps. */
static int collect_fields(Walk *w, const Table *table, const MessagePlan *plan, const uint8_t *p,
                          const uint8_t *end, PyObject *ignore, Parts *entries) {
    uint8_t seen[MAX_FIELDS];
    if (plan->n_fields > MAX_FIELDS) return fallback("message has too many fields");
    memset(seen, 0, (size_t)plan->n_fields);
    while (p < end) {
        uint64_t tag;
        if (!read_varint(&p, end, &tag)) return fallback("truncated tag");
        uint64_t number = tag >> 3;
        int wire_type = (int)(tag & 7);
        int32_t index = number <= plan->max_number ? plan->by_number[number] : -1;
        if (index < 0 || !wire_compatible(&plan->fields[index], wire_type)) {
            /* unknown to the message: ListFields() does not show it either */
            if (!skip_value(&p, end, wire_type)) return fallback("malformed field");
            continue;
        }
        const FieldPlan *field = &plan->fields[index];
        if (seen[index]) return fallback("field appears twice");
        seen[index] = 1;
        Digest key, value;
        digest_constant(field->key, &key);
        if (field->label == LABEL_SINGULAR) {
            if (hash_value(w, table, field, wire_type, &p, end, &value) < 0) return -1;
            if (parts_add_entry(entries, &key, &value) < 0) return -1;
            continue;
        }
        /* A repeated or map field: its elements are contiguous in a deterministic encoding. */
        Py_ssize_t count = 0;
        Parts items;
        parts_init(&items);
        int status = 0;
        for (;;) {
            if (field->label == LABEL_MAP) {
                size_t length;
                int added;
                if (!read_length(&p, end, &length)) {
                    status = fallback("truncated map entry");
                    break;
                }
                status = add_map_entry(w, table, field, p, length, ignore, &items, &added);
                if (status < 0) break;
                p += length;
                count += added;
            } else if (wire_type == 2 && packable(field->type)) {
                size_t length;
                if (!read_length(&p, end, &length)) {
                    status = fallback("truncated packed field");
                    break;
                }
                const uint8_t *packed_end = p + length;
                int element_type = scalar_wire_type(field->type);
                while (p < packed_end) {
                    Digest element;
                    status = hash_value(w, table, field, element_type, &p, packed_end, &element);
                    if (status < 0 || (status = parts_add(&items, &element)) < 0) break;
                    count++;
                }
                if (status < 0) break;
            } else {
                Digest element;
                status = hash_value(w, table, field, wire_type, &p, end, &element);
                if (status < 0 || (status = parts_add(&items, &element)) < 0) break;
                count++;
            }
            /* Continue while the next tag is this field's again. */
            if (p >= end) break;
            const uint8_t *next = p;
            if (!read_varint(&next, end, &tag)) {
                status = fallback("truncated tag");
                break;
            }
            if ((tag >> 3) != number || !wire_compatible(field, (int)(tag & 7))) break;
            wire_type = (int)(tag & 7);
            p = next;
        }
        if (status == 0 && count > 0) {
            status = parts_job(w, &items, field->label == LABEL_MAP ? JOB_DICT : JOB_LIST, &value);
            if (status == 0) status = parts_add_entry(entries, &key, &value);
        }
        parts_free(&items);
        if (status < 0) return -1;
    }
    return 0;
}

static int hash_callback(Walk *w, const MessagePlan *plan, const uint8_t *p, size_t n,
                         Digest *out) {
    PyObject *data = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)n);
    if (data == NULL) return -1;
    PyObject *result = PyObject_CallOneArg(plan->callback, data);
    Py_DECREF(data);
    if (result == NULL) return -1;
    if (!PyBytes_Check(result) || PyBytes_GET_SIZE(result) != 32) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_TypeError, "a callback plan must return a 32-byte digest");
        return -1;
    }
    uint8_t *digest = digest_now(w, out);
    if (digest != NULL) memcpy(digest, PyBytes_AS_STRING(result), 32);
    Py_DECREF(result);
    return digest == NULL ? -1 : 0;
}

static int hash_single_entry(Walk *w, const uint8_t key[32], const Digest *value, Digest *out) {
    Parts entry;
    Digest key_digest;
    parts_init(&entry);
    digest_constant(key, &key_digest);
    parts_add_entry(&entry, &key_digest, value); /* inline room: cannot fail */
    return parts_job(w, &entry, JOB_DICT, out);
}

/* Flyte's hashify: an overriding string field replaces the message by {override: value}; a
 * present pruned field keeps only itself (walked with its pruned plan); otherwise the normal
 * plan applies. */
static int hash_hashified(Walk *w, const Table *table, const MessagePlan *plan,
                          const uint8_t *data, size_t n, Digest *out) {
    const uint8_t *p = data, *end = data + n;
    const uint8_t *override = NULL, *pruned = NULL;
    size_t override_length = 0, pruned_length = 0;
    Py_ssize_t pruned_index = -1;
    while (p < end) {
        uint64_t tag;
        if (!read_varint(&p, end, &tag)) return fallback("truncated tag");
        uint32_t number = (uint32_t)(tag >> 3);
        int wire_type = (int)(tag & 7);
        if (wire_type == 2) {
            size_t length;
            if (!read_length(&p, end, &length)) return fallback("truncated length");
            if (number == plan->override_number) {
                override = p;
                override_length = length;
            } else {
                for (Py_ssize_t i = 0; i < plan->n_pruned; i++) {
                    if (plan->pruned_number[i] == number) {
                        pruned = p;
                        pruned_length = length;
                        pruned_index = i;
                    }
                }
            }
            p += length;
        } else if (!skip_value(&p, end, wire_type)) {
            return fallback("malformed field");
        }
    }
    Digest value;
    if (override != NULL && override_length > 0) {
        if (hash_string(w, override, override_length, &value) < 0) return -1;
        return hash_single_entry(w, plan->override_key, &value, out);
    }
    if (pruned_index >= 0) {
        if (hash_message(w, table, plan->pruned_sub[pruned_index], pruned, pruned_length, NULL,
                         &value) < 0)
            return -1;
        return hash_single_entry(w, plan->pruned_key[pruned_index], &value, out);
    }
    return hash_message(w, table, plan->normal, data, n, NULL, out);
}

static int hash_message(Walk *w, const Table *table, int index, const uint8_t *p, size_t n,
                        PyObject *ignore, Digest *out) {
    const MessagePlan *plan = &table->messages[index];
    if (plan->mode == MODE_CALLBACK) return hash_callback(w, plan, p, n, out);
    if (plan->mode == MODE_HASHIFY) return hash_hashified(w, table, plan, p, n, out);
    if (Py_EnterRecursiveCall(" while hashing a message")) return -1;
    Parts entries;
    parts_init(&entries);
    int status = collect_fields(w, table, plan, p, p + n, ignore, &entries);
    if (status == 0) {
        if (plan->mode == MODE_FIELDS) {
            status = entries.length ? parts_job(w, &entries, JOB_DICT, out)
                                    : digest_constant(EMPTY_DICT_HASH, out);
        } else if (entries.length == 2) {
            /* The message is its one member's value: that digest, pending or not. */
            out->hash = entries.items[1];
            out->level = entries.level;
        } else if (plan->mode == MODE_FIELD_ONE && entries.length == 0) {
            status = hash_default(w, table, &plan->fields[0], out);
        } else {
            status = fallback("no single member set");
        }
    }
    parts_free(&entries);
    Py_LeaveRecursiveCall();
    return status;
}

/* The objecthash of the message p[0:n] under plan `index`, written to `out`. */
static int digest_message(const Table *table, int index, const uint8_t *p, size_t n,
                          PyObject *ignore, uint8_t out[32]) {
    Walk w;
    Digest digest;
    walk_init(&w);
    int status = hash_message(&w, table, index, p, n, ignore, &digest);
    if (status == 0) status = flush(&w);
    if (status == 0) memcpy(out, digest.hash, 32);
    walk_free(&w);
    return status;
}

/* ------------------------------------------------------------------------------------------ */
/* plan tables */

static void table_free(Table *table) {
    if (table->messages == NULL) return;
    for (Py_ssize_t i = 0; i < table->n_messages; i++) {
        MessagePlan *plan = &table->messages[i];
        for (Py_ssize_t f = 0; f < plan->n_fields; f++) {
            FieldPlan *field = &plan->fields[f];
            PyMem_Free(field->enum_numbers);
            PyMem_Free(field->enum_hashes);
            if (field->map_value != NULL) {
                PyMem_Free(field->map_value->enum_numbers);
                PyMem_Free(field->map_value->enum_hashes);
                PyMem_Free(field->map_value);
            }
        }
        PyMem_Free(plan->fields);
        PyMem_Free(plan->by_number);
        Py_XDECREF(plan->callback);
    }
    PyMem_Free(table->messages);
}

static void table_destructor(PyObject *capsule) {
    Table *table = PyCapsule_GetPointer(capsule, "taskcache.hashing._core.Table");
    if (table == NULL) return;
    table_free(table);
    PyMem_Free(table);
}

static int copy_digest(PyObject *object, uint8_t out[32], const char *what) {
    if (!PyBytes_Check(object) || PyBytes_GET_SIZE(object) != 32) {
        PyErr_Format(PyExc_TypeError, "%s must be a 32-byte digest", what);
        return -1;
    }
    memcpy(out, PyBytes_AS_STRING(object), 32);
    return 0;
}

static int index_in(PyObject *object, Py_ssize_t n_messages, int allow_none, int *out) {
    long value = PyLong_AsLong(object);
    if (value == -1 && PyErr_Occurred()) return -1;
    if ((value < 0 && !(allow_none && value == -1)) || value >= n_messages) {
        PyErr_SetString(PyExc_ValueError, "plan index out of range");
        return -1;
    }
    *out = (int)value;
    return 0;
}

/* field = (number, type, label, key, sub, enum_numbers, enum_hashes, closed_enum, null_enum,
 *          map_key_type, map_value field or None) */
static int compile_field(PyObject *description, Py_ssize_t n_messages, FieldPlan *field) {
    PyObject *number, *key, *sub, *enum_numbers, *enum_hashes, *map_value;
    int type, label, closed_enum, null_enum, map_key_type;
    if (!PyArg_ParseTuple(description, "OiiOOO!O!ppiO", &number, &type, &label, &key, &sub,
                          &PyTuple_Type, &enum_numbers, &PyTuple_Type, &enum_hashes, &closed_enum,
                          &null_enum, &map_key_type, &map_value))
        return -1;
    unsigned long field_number = PyLong_AsUnsignedLong(number);
    if (PyErr_Occurred()) return -1;
    field->number = (uint32_t)field_number;
    field->type = type;
    field->label = label;
    field->closed_enum = closed_enum;
    field->null_enum = null_enum;
    field->map_key_type = map_key_type;
    if (type == T_GROUP) {
        PyErr_SetString(PyExc_ValueError, "group fields need a callback plan");
        return -1;
    }
    if (copy_digest(key, field->key, "a field key") < 0) return -1;
    if (index_in(sub, n_messages, 1, &field->sub) < 0) return -1;
    if (type == T_MESSAGE && label != LABEL_MAP && field->sub < 0) {
        PyErr_SetString(PyExc_ValueError, "a message field needs a plan");
        return -1;
    }
    Py_ssize_t n_enum = PyTuple_GET_SIZE(enum_numbers);
    if (PyTuple_GET_SIZE(enum_hashes) != n_enum) {
        PyErr_SetString(PyExc_ValueError, "enum numbers and names differ in length");
        return -1;
    }
    field->n_enum = n_enum;
    if (n_enum) {
        field->enum_numbers = PyMem_Malloc(sizeof(int32_t) * (size_t)n_enum);
        field->enum_hashes = PyMem_Malloc(32 * (size_t)n_enum);
        if (field->enum_numbers == NULL || field->enum_hashes == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t i = 0; i < n_enum; i++) {
            long value = PyLong_AsLong(PyTuple_GET_ITEM(enum_numbers, i));
            if (value == -1 && PyErr_Occurred()) return -1;
            if (i > 0 && value <= field->enum_numbers[i - 1]) {
                PyErr_SetString(PyExc_ValueError, "enum numbers must be sorted and distinct");
                return -1;
            }
            field->enum_numbers[i] = (int32_t)value;
            if (copy_digest(PyTuple_GET_ITEM(enum_hashes, i), field->enum_hashes + 32 * i,
                            "an enum name") < 0)
                return -1;
        }
    }
    if (label == LABEL_MAP) {
        if (map_value == Py_None) {
            PyErr_SetString(PyExc_ValueError, "a map field needs its value field");
            return -1;
        }
        field->map_value = PyMem_Calloc(1, sizeof(FieldPlan));
        if (field->map_value == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (compile_field(map_value, n_messages, field->map_value) < 0) return -1;
        if (field->map_value->label != LABEL_SINGULAR) {
            PyErr_SetString(PyExc_ValueError, "a map value is singular");
            return -1;
        }
    }
    return 0;
}

/* message = (mode, fields, callback or None, hashify or None);
 * hashify = (override_number, override_key, ((number, key, sub), ...), normal) */
static int compile_message(PyObject *description, Py_ssize_t n_messages, MessagePlan *plan) {
    PyObject *fields, *callback, *hashify;
    if (!PyArg_ParseTuple(description, "iO!OO", &plan->mode, &PyTuple_Type, &fields, &callback,
                          &hashify))
        return -1;
    if (plan->mode < MODE_FIELDS || plan->mode > MODE_HASHIFY) {
        PyErr_SetString(PyExc_ValueError, "unknown plan mode");
        return -1;
    }
    plan->n_fields = PyTuple_GET_SIZE(fields);
    if (plan->n_fields > MAX_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "too many fields for one plan");
        return -1;
    }
    plan->fields = PyMem_Calloc((size_t)plan->n_fields + 1, sizeof(FieldPlan));
    if (plan->fields == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    plan->max_number = 0;
    for (Py_ssize_t i = 0; i < plan->n_fields; i++) {
        if (compile_field(PyTuple_GET_ITEM(fields, i), n_messages, &plan->fields[i]) < 0) return -1;
        if (plan->fields[i].number > plan->max_number) plan->max_number = plan->fields[i].number;
    }
    if (plan->max_number > (1u << 20)) {
        PyErr_SetString(PyExc_ValueError, "field numbers too sparse for a plan");
        return -1;
    }
    plan->by_number = PyMem_Malloc(sizeof(int32_t) * ((size_t)plan->max_number + 1));
    if (plan->by_number == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint32_t i = 0; i <= plan->max_number; i++) plan->by_number[i] = -1;
    for (Py_ssize_t i = 0; i < plan->n_fields; i++)
        plan->by_number[plan->fields[i].number] = (int32_t)i;
    if ((plan->mode == MODE_FIELD_ONE || plan->mode == MODE_ONE_OF) && plan->n_fields < 1) {
        PyErr_SetString(PyExc_ValueError, "a delegating plan needs fields");
        return -1;
    }
    if (plan->mode == MODE_CALLBACK) {
        if (!PyCallable_Check(callback)) {
            PyErr_SetString(PyExc_TypeError, "a callback plan needs a callable");
            return -1;
        }
        Py_INCREF(callback);
        plan->callback = callback;
    }
    if (plan->mode == MODE_HASHIFY) {
        PyObject *override_number, *override_key, *pruned, *normal;
        if (!PyArg_ParseTuple(hashify, "OOO!O", &override_number, &override_key, &PyTuple_Type,
                              &pruned, &normal))
            return -1;
        plan->override_number = (uint32_t)PyLong_AsUnsignedLong(override_number);
        if (PyErr_Occurred()) return -1;
        if (copy_digest(override_key, plan->override_key, "the override key") < 0) return -1;
        if (index_in(normal, n_messages, 0, &plan->normal) < 0) return -1;
        plan->n_pruned = PyTuple_GET_SIZE(pruned);
        if (plan->n_pruned > MAX_PRUNED) {
            PyErr_SetString(PyExc_ValueError, "too many pruned fields");
            return -1;
        }
        for (Py_ssize_t i = 0; i < plan->n_pruned; i++) {
            PyObject *number, *key, *sub;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(pruned, i), "OOO", &number, &key, &sub))
                return -1;
            plan->pruned_number[i] = (uint32_t)PyLong_AsUnsignedLong(number);
            if (PyErr_Occurred()) return -1;
            if (copy_digest(key, plan->pruned_key[i], "a pruned key") < 0) return -1;
            if (index_in(sub, n_messages, 0, &plan->pruned_sub[i]) < 0) return -1;
        }
    }
    return 0;
}

static PyObject *core_compile(PyObject *Py_UNUSED(module), PyObject *messages) {
    if (!PyTuple_Check(messages)) {
        PyErr_SetString(PyExc_TypeError, "compile() takes a tuple of message plans");
        return NULL;
    }
    Table *table = PyMem_Calloc(1, sizeof(Table));
    if (table == NULL) return PyErr_NoMemory();
    table->n_messages = PyTuple_GET_SIZE(messages);
    table->messages = PyMem_Calloc((size_t)table->n_messages + 1, sizeof(MessagePlan));
    if (table->messages == NULL) {
        PyMem_Free(table);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < table->n_messages; i++) {
        if (compile_message(PyTuple_GET_ITEM(messages, i), table->n_messages,
                            &table->messages[i]) < 0) {
            table_free(table);
            PyMem_Free(table);
            return NULL;
        }
    }
    PyObject *capsule = PyCapsule_New(table, "taskcache.hashing._core.Table", table_destructor);
    if (capsule == NULL) {
        table_free(table);
        PyMem_Free(table);
    }
    return capsule;
}

/* ------------------------------------------------------------------------------------------ */
/* entry points */

static int digest_arguments(PyObject *const *args, Py_ssize_t nargs, const char *name,
                            Table **table, int *index, Py_buffer *data, PyObject **ignore) {
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "%s() takes table, index, data, ignore", name);
        return -1;
    }
    *table = PyCapsule_GetPointer(args[0], "taskcache.hashing._core.Table");
    if (*table == NULL) return -1;
    if (index_in(args[1], (*table)->n_messages, 0, index) < 0) return -1;
    if (args[3] == Py_None) {
        *ignore = NULL;
    } else if (PyAnySet_Check(args[3])) {
        *ignore = PySet_GET_SIZE(args[3]) ? args[3] : NULL;
    } else {
        PyErr_SetString(PyExc_TypeError, "ignore must be a set, a frozenset or None");
        return -1;
    }
    return PyObject_GetBuffer(args[2], data, PyBUF_SIMPLE);
}

static PyObject *core_digest(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    Table *table;
    int index;
    Py_buffer data;
    PyObject *ignore;
    if (digest_arguments(args, nargs, "digest", &table, &index, &data, &ignore) < 0) return NULL;
    uint8_t out[32];
    int status = digest_message(table, index, data.buf, (size_t)data.len, ignore, out);
    PyBuffer_Release(&data);
    if (status < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *core_digest_urlsafe(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs) {
    Table *table;
    int index;
    Py_buffer data;
    PyObject *ignore;
    if (digest_arguments(args, nargs, "digest_urlsafe", &table, &index, &data, &ignore) < 0)
        return NULL;
    uint8_t out[32];
    int status = digest_message(table, index, data.buf, (size_t)data.len, ignore, out);
    PyBuffer_Release(&data);
    if (status < 0) return NULL;
    char text[44];
    size_t length = base64_encode(out, 32, BASE64_URLSAFE, 0, text);
    return PyUnicode_FromStringAndSize(text, (Py_ssize_t)length);
}

static PyObject *core_configure(PyObject *Py_UNUSED(module), PyObject *converter) {
    if (!PyCallable_Check(converter)) {
        PyErr_SetString(PyExc_TypeError, "configure() takes the float32 converter");
        return NULL;
    }
    Py_INCREF(converter);
    Py_XSETREF(float32_converter, converter);
    Py_RETURN_NONE;
}

static PyObject *core_sha256_bundled(PyObject *Py_UNUSED(module), PyObject *const *args,
                                     Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "sha256_bundled() takes data and sha_ni");
        return NULL;
    }
    int sha_ni = PyObject_IsTrue(args[1]);
    if (sha_ni < 0) return NULL;
    Py_buffer data;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0) return NULL;
    tc_sha256_blocks_fn previous = tc_sha256_blocks;
    if (sha_ni && !tc_sha256_select(1)) {
        PyBuffer_Release(&data);
        PyErr_SetString(PyExc_ValueError, "this CPU or build has no SHA-NI path");
        return NULL;
    }
    if (!sha_ni) tc_sha256_blocks = tc_sha256_compress_portable;
    tc_sha256_ctx ctx;
    uint8_t out[32];
    tc_sha256_init(&ctx);
    tc_sha256_update(&ctx, data.buf, (size_t)data.len);
    tc_sha256_final(out, &ctx);
    tc_sha256_blocks = previous;
    PyBuffer_Release(&data);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *core_tagged_digests(PyObject *Py_UNUSED(module), PyObject *const *args,
                                     Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "tagged_digests() takes tag and items");
        return NULL;
    }
    if (!PyBytes_Check(args[0]) || PyBytes_GET_SIZE(args[0]) != 1) {
        PyErr_SetString(PyExc_TypeError, "tag must be one byte");
        return NULL;
    }
    uint8_t tag = (uint8_t)PyBytes_AS_STRING(args[0])[0];
    PyObject *items = PySequence_Fast(args[1], "items must be a sequence of bytes");
    if (items == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
    Digest *digests = PyMem_Malloc(sizeof(Digest) * (size_t)(n ? n : 1));
    PyObject *result = NULL;
    Walk w;
    walk_init(&w);
    int status = digests == NULL ? (PyErr_NoMemory(), -1) : 0;
    for (Py_ssize_t i = 0; i < n && status == 0; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "items must be bytes");
            status = -1;
            break;
        }
        /* `items` holds the bytes for the whole walk: stable. */
        status = leaf(&w, tag, PyBytes_AS_STRING(item), (size_t)PyBytes_GET_SIZE(item), 1,
                      &digests[i]);
    }
    if (status == 0) status = flush(&w);
    if (status == 0) result = PyList_New(n);
    for (Py_ssize_t i = 0; result != NULL && i < n; i++) {
        PyObject *digest = PyBytes_FromStringAndSize((const char *)digests[i].hash, 32);
        if (digest == NULL) {
            Py_CLEAR(result);
            break;
        }
        PyList_SET_ITEM(result, i, digest);
    }
    walk_free(&w);
    PyMem_Free(digests);
    Py_DECREF(items);
    return result;
}

static PyObject *core_set_batching(PyObject *Py_UNUSED(module), PyObject *enabled) {
    int value = PyObject_IsTrue(enabled);
    if (value < 0) return NULL;
    int previous = batching;
    batching = value;
    return PyBool_FromLong(previous);
}

static PyObject *core_select_sha256(PyObject *Py_UNUSED(module), PyObject *name) {
    const char *text = PyUnicode_AsUTF8(name);
    if (text == NULL) return NULL;
    if (sha_select(text) < 0) {
        PyErr_Format(PyExc_ValueError, "SHA-256 %R is not available in this build or CPU", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *core_sha256_backend(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored)) {
    return PyUnicode_FromString(SHA_BACKEND_NAMES[sha_backend]);
}

static PyMethodDef core_methods[] = {
    {"compile", core_compile, METH_O, "compile(plans) -> table: compile message plans."},
    {"digest", (PyCFunction)(void (*)(void))core_digest, METH_FASTCALL,
     "digest(table, index, data, ignore) -> bytes: objecthash of serialized message data."},
    {"digest_urlsafe", (PyCFunction)(void (*)(void))core_digest_urlsafe, METH_FASTCALL,
     "digest_urlsafe(table, index, data, ignore) -> str: the digest, URL-safe base64, no '='."},
    {"configure", core_configure, METH_O,
     "configure(float32_converter): the function giving Go's float32 text as a double."},
    {"sha256_bundled", (PyCFunction)(void (*)(void))core_sha256_bundled, METH_FASTCALL,
     "sha256_bundled(data, sha_ni) -> bytes: the bundled SHA-256, SHA-NI or portable path."},
    {"tagged_digests", (PyCFunction)(void (*)(void))core_tagged_digests, METH_FASTCALL,
     "tagged_digests(tag, items) -> list: sha256(tag + item) of each item, as one batch of jobs."},
    {"set_batching", core_set_batching, METH_O,
     "set_batching(enabled) -> bool: defer and batch node digests (the default) or compute each "
     "where the walker meets it; returns the previous setting."},
    {"select_sha256", core_select_sha256, METH_O,
     "select_sha256(name): use 'sha-ni', 'openssl' or 'portable' (ValueError if unavailable)."},
    {"sha256_backend", core_sha256_backend, METH_NOARGS,
     "sha256_backend() -> str: the SHA-256 in use."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "taskcache.hashing._core",
    "The compiled wire-format walker of taskcache's hashing (see taskcache.hashing.compiled).", -1,
    core_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void) {
    PyObject *module = PyModule_Create(&core_module);
    if (module == NULL) return NULL;
    FallbackError = PyErr_NewException("taskcache.hashing._core.Fallback", NULL, NULL);
    if (FallbackError == NULL || PyModule_AddObjectRef(module, "Fallback", FallbackError) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (sha_select("sha-ni") < 0 && sha_select("openssl") < 0) sha_select("portable");
    sha_tagged('n', NULL, 0, NIL_HASH);
    sha_tagged('b', "1", 1, TRUE_HASH);
    sha_tagged('b', "0", 1, FALSE_HASH);
    sha_tagged('d', NULL, 0, EMPTY_DICT_HASH);
    sha_tagged('l', NULL, 0, EMPTY_LIST_HASH);
    sha_tagged('u', NULL, 0, EMPTY_STRING_HASH);
    return module;
}
