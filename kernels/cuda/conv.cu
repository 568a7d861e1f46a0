// im2col / col2im for the GPU (twin: kernels/cpu/conv.py; reference: minitorch_cifar/nn/conv.py).
//
// Layouts as the reference: x is (N, C, H, W); col is (C*kh*kw, N*OH*OW) with row r = (c*kh + i)*kw + j
// and column q = n*OH*OW + oh*OW + ow. One thread per output element, in a grid-stride loop so any
// grid size covers any problem size. Padding is never materialised: out-of-image reads give 0.

template <typename T>
__device__ void im2col_body(const T* __restrict__ x, T* __restrict__ col,
                            long long N, long long C, long long H, long long W,
                            long long kh, long long kw, long long stride, long long padding,
                            long long OH, long long OW) {
    const long long P = OH * OW, cols = N * P, total = C * kh * kw * cols;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long r = idx / cols, q = idx % cols;      // which row (c, i, j), which column (n, oh, ow)
        const long long c = r / (kh * kw), i = (r / kw) % kh, j = r % kw;
        const long long n = q / P, oh = (q % P) / OW, ow = q % OW;
        const long long h = oh * stride + i - padding, w = ow * stride + j - padding;
        col[idx] = (h >= 0 && h < H && w >= 0 && w < W) ? x[((n * C + c) * H + h) * W + w] : T(0);
    }
}

// col2im gathers instead of scattering: the thread of input pixel (n, c, h, w) sums every column entry
// that was copied from it. No atomics, so the result does not depend on thread order.
template <typename T>
__device__ void col2im_body(const T* __restrict__ col, T* __restrict__ dx,
                            long long N, long long C, long long H, long long W,
                            long long kh, long long kw, long long stride, long long padding,
                            long long OH, long long OW) {
    const long long P = OH * OW, total = N * C * H * W;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < total;
         idx += (long long)blockDim.x * gridDim.x) {
        const long long w = idx % W, h = (idx / W) % H, c = (idx / (H * W)) % C, n = idx / (C * H * W);
        T sum = 0;
        for (long long i = 0; i < kh; ++i) {
            const long long hh = h + padding - i;            // = oh * stride when (h, w) sits at offset i
            if (hh < 0 || hh % stride != 0 || hh / stride >= OH) continue;
            for (long long j = 0; j < kw; ++j) {
                const long long ww = w + padding - j;
                if (ww < 0 || ww % stride != 0 || ww / stride >= OW) continue;
                sum += col[((c * kh + i) * kw + j) * (N * P) + n * P + (hh / stride) * OW + ww / stride];
            }
        }
        dx[idx] = sum;
    }
}

#define ARGS long long N, long long C, long long H, long long W, long long kh, long long kw, \
             long long stride, long long padding, long long OH, long long OW
#define PASS N, C, H, W, kh, kw, stride, padding, OH, OW
extern "C" {
__global__ void im2col_f32(const float* x, float* col, ARGS) { im2col_body<float>(x, col, PASS); }
__global__ void im2col_f64(const double* x, double* col, ARGS) { im2col_body<double>(x, col, PASS); }
__global__ void col2im_f32(const float* col, float* dx, ARGS) { col2im_body<float>(col, dx, PASS); }
__global__ void col2im_f64(const double* col, double* dx, ARGS) { col2im_body<double>(col, dx, PASS); }
}
