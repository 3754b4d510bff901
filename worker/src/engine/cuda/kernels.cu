// The reference pipeline's per-element math on the GPU: a line-for-line port of
// worker/src/engine/kernels.rs (the CPU functions stay the reference; the parity tests in
// engine/cuda/tests.rs compare the two). Compiled at run time by NVRTC with --fmad=false so
// that `a*b + c` rounds twice as Rust does: posterior_mean, combine and to_rgb8 then give
// the CPU's bits exactly, and only logf/cosf in gaussian() may differ, by an ulp or two.
//
// Layout (engine/mod.rs): a batch of `frames` frames of `pixels` pixels, frame-major,
// pixels row-major, RGB interleaved: x[f*3P + 3p + c]. One thread per element, grid-stride.

typedef unsigned long long u64;
typedef unsigned int u32;

// splitmix64 finaliser: kernels.rs mix64.
__device__ __forceinline__ u64 mix64(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// kernels.rs hash_words for four words (the only length the noise uses).
__device__ __forceinline__ u64 hash4(u64 a, u64 b, u64 c, u64 d) {
    u64 acc = 0x5EED0F5CE4E5ull;
    acc = mix64(acc ^ mix64(a));
    acc = mix64(acc ^ mix64(b));
    acc = mix64(acc ^ mix64(c));
    acc = mix64(acc ^ mix64(d));
    return acc;
}

// kernels.rs gaussian: Box-Muller on two 24-bit uniforms, u1 in (0, 1], u2 in [0, 1).
__device__ __forceinline__ float gaussian(u64 h) {
    const float scale = 1.0f / 16777216.0f;
    float u1 = (float)((u32)(h >> 40) + 1u) * scale;
    float u2 = (float)((u32)(h & 0xFFFFFFull)) * scale;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530717958647692f * u2);
}

#define STATIC_STREAM 0x57474943ull
#define FRAME_STREAM 0x4652414Dull

// x[e] = sigma_init * initial_noise(seed, frame_index[f], p, c, keys[f*P + p], w).
extern "C" __global__ void initial_noise(
    float* x, const u64* keys, const u32* frame_index, u64 pixels, u64 n, u64 seed,
    float sigma_init, float static_weight) {
    u64 per_frame = 3 * pixels;
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n;
         e += (u64)gridDim.x * blockDim.x) {
        u64 f = e / per_frame;
        u64 r = e - f * per_frame;
        u64 p = r / 3;
        u64 c = r - 3 * p;
        float s = gaussian(hash4(STATIC_STREAM, seed, keys[f * pixels + p], c));
        float fr = gaussian(hash4(FRAME_STREAM, seed, (u64)frame_index[f], (p << 2) | c));
        float w = static_weight;
        float rest = sqrtf(fmaxf(1.0f - w * w, 0.0f));
        x[e] = sigma_init * (w * s + rest * fr);
    }
}

// d[e] = posterior_mean(x[e], guide[e], var[e / 3], sigma).
extern "C" __global__ void posterior_mean(
    float* d, const float* x, const float* guide, const float* var, u64 n, float sigma) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n;
         e += (u64)gridDim.x * blockDim.x) {
        float mean = guide[e];
        float v = var[e / 3];
        d[e] = mean + v / (v + sigma * sigma) * (x[e] - mean);
    }
}

// x[e] = a*x[e] + b*d[e] + c*d_prev[e] (kernels.rs combine).
extern "C" __global__ void combine(
    float* x, const float* d, const float* d_prev, u64 n, float a, float b, float c) {
    for (u64 e = blockIdx.x * (u64)blockDim.x + threadIdx.x; e < n;
         e += (u64)gridDim.x * blockDim.x) {
        x[e] = a * x[e] + b * d[e] + c * d_prev[e];
    }
}

// out[i] = to_u8(x[offset + i]) for i < n: data units to 8-bit, clamped, rounded to nearest.
extern "C" __global__ void to_rgb8(unsigned char* out, const float* x, u64 offset, u64 n) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n;
         i += (u64)gridDim.x * blockDim.x) {
        float unit = fminf(fmaxf((x[offset + i] + 1.0f) * 0.5f, 0.0f), 1.0f);
        out[i] = (unsigned char)(u32)(unit * 255.0f + 0.5f);
    }
}
