/* The bundled SHA-256 (FIPS 180-4): portable C, plus a path using the x86 SHA extensions
 * (SHA-NI) chosen at run time with cpuid.
 *
 * Owns nothing but the digest: the block function, and a pair function compressing one block
 * of each of two independent messages (interleaved on SHA-NI, one after the other in portable
 * C). The compiled hashing core (_core.c) uses the SHA-NI path when the CPU has it (objecthash
 * digests are mostly one block, where it beats libcrypto's call overhead), else OpenSSL's
 * libcrypto when the build found it, else the portable code; it exposes both bundled paths to
 * the tests, which hold them equal to hashlib.
 */
#ifndef TASKCACHE_SHA256_PORTABLE_H
#define TASKCACHE_SHA256_PORTABLE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t state[8];
    uint64_t length; /* bytes hashed so far */
    uint8_t block[64];
    size_t used; /* bytes waiting in block */
} tc_sha256_ctx;

static const uint32_t tc_sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define TC_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void tc_sha256_compress_portable(uint32_t state[8], const uint8_t *block, size_t blocks) {
    for (; blocks; blocks--, block += 64) {
        uint32_t w[64];
        for (int i = 0; i < 16; i++) {
            w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
                   ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
        }
        for (int i = 16; i < 64; i++) {
            uint32_t s0 = TC_ROTR(w[i - 15], 7) ^ TC_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
            uint32_t s1 = TC_ROTR(w[i - 2], 17) ^ TC_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16] + s0 + w[i - 7] + s1;
        }
        uint32_t a = state[0], b = state[1], c = state[2], d = state[3];
        uint32_t e = state[4], f = state[5], g = state[6], h = state[7];
        for (int i = 0; i < 64; i++) {
            uint32_t s1 = TC_ROTR(e, 6) ^ TC_ROTR(e, 11) ^ TC_ROTR(e, 25);
            uint32_t choice = (e & f) ^ (~e & g);
            uint32_t t1 = h + s1 + choice + tc_sha256_k[i] + w[i];
            uint32_t s0 = TC_ROTR(a, 2) ^ TC_ROTR(a, 13) ^ TC_ROTR(a, 22);
            uint32_t majority = (a & b) ^ (a & c) ^ (b & c);
            uint32_t t2 = s0 + majority;
            h = g;
            g = f;
            f = e;
            e = d + t1;
            d = c;
            c = b;
            b = a;
            a = t1 + t2;
        }
        state[0] += a;
        state[1] += b;
        state[2] += c;
        state[3] += d;
        state[4] += e;
        state[5] += f;
        state[6] += g;
        state[7] += h;
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TC_HAVE_SHA_NI_PATH 1
#include <cpuid.h>
#include <immintrin.h>

__attribute__((target("sha,sse4.1,ssse3"))) static void tc_sha256_compress_sha_ni(
    uint32_t state[8], const uint8_t *block, size_t blocks) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[0]), 0xB1);
    __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&state[4]), 0x1B);
    __m128i abef = _mm_alignr_epi8(cdab, efgh, 8);
    __m128i cdgh = _mm_blend_epi16(efgh, cdab, 0xF0);
    for (; blocks; blocks--, block += 64) {
        __m128i abef_saved = abef, cdgh_saved = cdgh;
        __m128i w[4];
#pragma GCC unroll 16
        for (int group = 0; group < 16; group++) {
            __m128i words;
            if (group < 4) {
                words = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(block + 16 * group)),
                                         byte_swap);
            } else {
                __m128i t = _mm_sha256msg1_epu32(w[group & 3], w[(group + 1) & 3]);
                t = _mm_add_epi32(t, _mm_alignr_epi8(w[(group + 3) & 3], w[(group + 2) & 3], 4));
                words = _mm_sha256msg2_epu32(t, w[(group + 3) & 3]);
            }
            w[group & 3] = words;
            __m128i message =
                _mm_add_epi32(words, _mm_loadu_si128((const __m128i *)&tc_sha256_k[4 * group]));
            cdgh = _mm_sha256rnds2_epu32(cdgh, abef, message);
            abef = _mm_sha256rnds2_epu32(abef, cdgh, _mm_shuffle_epi32(message, 0x0E));
        }
        abef = _mm_add_epi32(abef, abef_saved);
        cdgh = _mm_add_epi32(cdgh, cdgh_saved);
    }
    __m128i feba = _mm_shuffle_epi32(abef, 0x1B);
    __m128i dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128((__m128i *)&state[0], _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128((__m128i *)&state[4], _mm_alignr_epi8(dchg, feba, 8));
}

/* One block each of two independent messages, their rounds interleaved: sha256rnds2 is
 * latency-bound, so the second message's rounds fill the first one's wait (~1.9x the
 * throughput of two tc_sha256_compress_sha_ni calls on one core). */
__attribute__((target("sha,sse4.1,ssse3"))) static void tc_sha256_compress_pair_sha_ni(
    uint32_t state0[8], const uint8_t *block0, uint32_t state1[8], const uint8_t *block1) {
    const __m128i byte_swap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    uint32_t *states[2] = {state0, state1};
    const uint8_t *blocks[2] = {block0, block1};
    __m128i abef[2], cdgh[2], abef_saved[2], cdgh_saved[2], w[2][4];
    for (int lane = 0; lane < 2; lane++) {
        __m128i cdab = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&states[lane][0]), 0xB1);
        __m128i efgh = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&states[lane][4]), 0x1B);
        abef[lane] = abef_saved[lane] = _mm_alignr_epi8(cdab, efgh, 8);
        cdgh[lane] = cdgh_saved[lane] = _mm_blend_epi16(efgh, cdab, 0xF0);
    }
#pragma GCC unroll 16
    for (int group = 0; group < 16; group++) {
        const __m128i k = _mm_loadu_si128((const __m128i *)&tc_sha256_k[4 * group]);
#pragma GCC unroll 2
        for (int lane = 0; lane < 2; lane++) {
            __m128i words;
            if (group < 4) {
                words = _mm_shuffle_epi8(
                    _mm_loadu_si128((const __m128i *)(blocks[lane] + 16 * group)), byte_swap);
            } else {
                __m128i t = _mm_sha256msg1_epu32(w[lane][group & 3], w[lane][(group + 1) & 3]);
                t = _mm_add_epi32(
                    t, _mm_alignr_epi8(w[lane][(group + 3) & 3], w[lane][(group + 2) & 3], 4));
                words = _mm_sha256msg2_epu32(t, w[lane][(group + 3) & 3]);
            }
            w[lane][group & 3] = words;
            __m128i message = _mm_add_epi32(words, k);
            cdgh[lane] = _mm_sha256rnds2_epu32(cdgh[lane], abef[lane], message);
            abef[lane] =
                _mm_sha256rnds2_epu32(abef[lane], cdgh[lane], _mm_shuffle_epi32(message, 0x0E));
        }
    }
    for (int lane = 0; lane < 2; lane++) {
        __m128i feba = _mm_shuffle_epi32(_mm_add_epi32(abef[lane], abef_saved[lane]), 0x1B);
        __m128i dchg = _mm_shuffle_epi32(_mm_add_epi32(cdgh[lane], cdgh_saved[lane]), 0xB1);
        _mm_storeu_si128((__m128i *)&states[lane][0], _mm_blend_epi16(feba, dchg, 0xF0));
        _mm_storeu_si128((__m128i *)&states[lane][4], _mm_alignr_epi8(dchg, feba, 8));
    }
}

static int tc_cpu_has_sha_ni(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return 0;
    int sse41 = (ecx >> 19) & 1, ssse3 = (ecx >> 9) & 1;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return 0;
    return sse41 && ssse3 && ((ebx >> 29) & 1);
}
#else
static int tc_cpu_has_sha_ni(void) { return 0; }
#endif

typedef void (*tc_sha256_blocks_fn)(uint32_t state[8], const uint8_t *block, size_t blocks);
typedef void (*tc_sha256_pair_fn)(uint32_t state0[8], const uint8_t *block0, uint32_t state1[8],
                                  const uint8_t *block1);

/* Without SHA-NI two messages gain nothing from interleaving: one after the other. */
static void tc_sha256_compress_pair_portable(uint32_t state0[8], const uint8_t *block0,
                                             uint32_t state1[8], const uint8_t *block1) {
    tc_sha256_compress_portable(state0, block0, 1);
    tc_sha256_compress_portable(state1, block1, 1);
}

/* The block functions every bundled digest uses: set once by tc_sha256_select(). */
static tc_sha256_blocks_fn tc_sha256_blocks = tc_sha256_compress_portable;
static tc_sha256_pair_fn tc_sha256_pair = tc_sha256_compress_pair_portable;

/* Chooses the SHA-NI path when the CPU has it and `allow_sha_ni`; returns whether it did. */
static int tc_sha256_select(int allow_sha_ni) {
#ifdef TC_HAVE_SHA_NI_PATH
    if (allow_sha_ni && tc_cpu_has_sha_ni()) {
        tc_sha256_blocks = tc_sha256_compress_sha_ni;
        tc_sha256_pair = tc_sha256_compress_pair_sha_ni;
        return 1;
    }
#endif
    tc_sha256_blocks = tc_sha256_compress_portable;
    tc_sha256_pair = tc_sha256_compress_pair_portable;
    return 0;
}

static void tc_sha256_init(tc_sha256_ctx *ctx) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, initial, sizeof(initial));
    ctx->length = 0;
    ctx->used = 0;
}

static void tc_sha256_update(tc_sha256_ctx *ctx, const void *data, size_t size) {
    const uint8_t *bytes = (const uint8_t *)data;
    ctx->length += size;
    if (ctx->used) {
        size_t take = 64 - ctx->used;
        if (take > size) take = size;
        memcpy(ctx->block + ctx->used, bytes, take);
        ctx->used += take;
        bytes += take;
        size -= take;
        if (ctx->used < 64) return;
        tc_sha256_blocks(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    if (size >= 64) {
        tc_sha256_blocks(ctx->state, bytes, size / 64);
        bytes += size & ~(size_t)63;
        size &= 63;
    }
    memcpy(ctx->block, bytes, size);
    ctx->used = size;
}

static void tc_sha256_final(uint8_t out[32], tc_sha256_ctx *ctx) {
    uint64_t bits = ctx->length * 8;
    ctx->block[ctx->used++] = 0x80;
    if (ctx->used > 56) {
        memset(ctx->block + ctx->used, 0, 64 - ctx->used);
        tc_sha256_blocks(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    memset(ctx->block + ctx->used, 0, 56 - ctx->used);
    for (int i = 0; i < 8; i++) ctx->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    tc_sha256_blocks(ctx->state, ctx->block, 1);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        out[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        out[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        out[4 * i + 3] = (uint8_t)ctx->state[i];
    }
}

#undef TC_ROTR

#endif
