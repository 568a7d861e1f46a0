// Max-pool forward/backward for the GPU (twin: kernels/cpu/pool.py; reference: minitorch_cifar/nn/pool.py).
//
// Forward: one thread per output; arg holds the offset i*kw + j of the window's *first* maximum
// (strictly-greater comparison in row-major order, as torch). Padding reads as -infinity.
// Backward gathers: the thread of input pixel (n, c, h, w) adds dout of every window whose argmax is it.

template <typename T> __device__ T negative_infinity();
template <> __device__ float negative_infinity<float>() { return -__int_as_float(0x7f800000); }
template <> __device__ double negative_infinity<double>() { return -__longlong_as_double(0x7ff0000000000000LL); }

template <typename T>
__device__ void maxpool_forward_body(const T* __restrict__ x, T* __restrict__ out, unsigned char* __restrict__ arg,
                                     long long N, long long C, long long H, long long W, long long kh, long long kw,
                                     long long stride, long long padding, long long OH, long long OW) {
    const long long total = N * C * OH * OW;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long ow = idx % OW, oh = (idx / OW) % OH, nc = idx / (OH * OW);
        const T* plane = x + nc * H * W;
        T best = negative_infinity<T>();
        int best_k = 0;
        for (long long i = 0; i < kh; ++i) {
            const long long h = oh * stride + i - padding;
            if (h < 0 || h >= H) continue;
            for (long long j = 0; j < kw; ++j) {
                const long long w = ow * stride + j - padding;
                if (w >= 0 && w < W && plane[h * W + w] > best) {
                    best = plane[h * W + w];
                    best_k = (int)(i * kw + j);
                }
            }
        }
        out[idx] = best;
        arg[idx] = (unsigned char)best_k;
    }
}

template <typename T>
__device__ void maxpool_backward_body(const T* __restrict__ dout, const unsigned char* __restrict__ arg, T* __restrict__ dx,
                                      long long N, long long C, long long H, long long W, long long kh, long long kw,
                                      long long stride, long long padding, long long OH, long long OW) {
    const long long total = N * C * H * W;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long w = idx % W, h = (idx / W) % H, nc = idx / (H * W);
        T sum = 0;
        for (long long i = 0; i < kh; ++i) {
            const long long hh = h + padding - i;
            if (hh < 0 || hh % stride != 0 || hh / stride >= OH) continue;
            for (long long j = 0; j < kw; ++j) {
                const long long ww = w + padding - j;
                if (ww < 0 || ww % stride != 0 || ww / stride >= OW) continue;
                const long long o = (nc * OH + hh / stride) * OW + ww / stride;
                if (arg[o] == i * kw + j) sum += dout[o];
            }
        }
        dx[idx] = sum;
    }
}

#define ARGS long long N, long long C, long long H, long long W, long long kh, long long kw, \
             long long stride, long long padding, long long OH, long long OW
#define PASS N, C, H, W, kh, kw, stride, padding, OH, OW
extern "C" {
__global__ void maxpool_forward_f32(const float* x, float* out, unsigned char* arg, ARGS) { maxpool_forward_body<float>(x, out, arg, PASS); }
__global__ void maxpool_forward_f64(const double* x, double* out, unsigned char* arg, ARGS) { maxpool_forward_body<double>(x, out, arg, PASS); }
__global__ void maxpool_backward_f32(const float* dout, const unsigned char* arg, float* dx, ARGS) { maxpool_backward_body<float>(dout, arg, dx, PASS); }
__global__ void maxpool_backward_f64(const double* dout, const unsigned char* arg, double* dx, ARGS) { maxpool_backward_body<double>(dout, arg, dx, PASS); }
}
