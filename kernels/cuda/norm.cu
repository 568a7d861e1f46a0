// Batch-norm (training mode) forward/backward for the GPU (twin: kernels/cpu/norm.py; reference:
// minitorch_cifar/nn/norm.py). x is (N, C, L). One block per channel: each thread sums a strided share
// of the channel's M = N*L values in double precision, then the block adds the shares in a shared-memory
// tree. Two passes for the variance (centre, then square), as the reference.
#define BLOCK 256

__device__ double block_sum(double v, double* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int half = blockDim.x / 2; half > 0; half /= 2) {   // blockDim.x is a power of two
        if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
        __syncthreads();
    }
    const double total = shared[0];
    __syncthreads();                                          // shared is reused by the next sum
    return total;
}

template <typename T>
__device__ void bn_forward_body(const T* __restrict__ x, const T* __restrict__ weight, const T* __restrict__ bias,
                                double eps, T* __restrict__ y, T* __restrict__ mean, T* __restrict__ var,
                                long long N, long long C, long long L) {
    __shared__ double shared[BLOCK];
    const long long c = blockIdx.x, M = N * L;
    double s = 0;
    for (long long m = threadIdx.x; m < M; m += blockDim.x) s += x[((m / L) * C + c) * L + m % L];
    const double mu = block_sum(s, shared) / M;
    double s2 = 0;
    for (long long m = threadIdx.x; m < M; m += blockDim.x) {
        const double d = x[((m / L) * C + c) * L + m % L] - mu;
        s2 += d * d;
    }
    const double v = block_sum(s2, shared) / M;
    const double scale = weight[c] / sqrt(v + eps), shift = bias[c] - mu * scale;
    for (long long m = threadIdx.x; m < M; m += blockDim.x) {
        const long long k = ((m / L) * C + c) * L + m % L;
        y[k] = (T)(x[k] * scale + shift);
    }
    if (threadIdx.x == 0) { mean[c] = (T)mu; var[c] = (T)v; }
}

template <typename T>
__device__ void bn_backward_body(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ weight,
                                 const T* __restrict__ mean, const T* __restrict__ invstd,
                                 T* __restrict__ dx, T* __restrict__ dweight, T* __restrict__ dbias,
                                 long long N, long long C, long long L) {
    __shared__ double shared[BLOCK];
    const long long c = blockIdx.x, M = N * L;
    const double mu = mean[c], inv = invstd[c];
    double sdy = 0, sdyx = 0;
    for (long long m = threadIdx.x; m < M; m += blockDim.x) {
        const long long k = ((m / L) * C + c) * L + m % L;
        sdy += dy[k];
        sdyx += dy[k] * (x[k] - mu) * inv;
    }
    sdy = block_sum(sdy, shared);
    sdyx = block_sum(sdyx, shared);
    const double coef = weight[c] * inv / M;
    for (long long m = threadIdx.x; m < M; m += blockDim.x) {
        const long long k = ((m / L) * C + c) * L + m % L;
        dx[k] = (T)(coef * (M * (double)dy[k] - sdy - (x[k] - mu) * inv * sdyx));
    }
    if (threadIdx.x == 0) { dweight[c] = (T)sdyx; dbias[c] = (T)sdy; }
}

extern "C" {
__global__ void batchnorm_forward_f32(const float* x, const float* w, const float* b, double eps, float* y, float* mean, float* var, long long N, long long C, long long L) { bn_forward_body<float>(x, w, b, eps, y, mean, var, N, C, L); }
__global__ void batchnorm_forward_f64(const double* x, const double* w, const double* b, double eps, double* y, double* mean, double* var, long long N, long long C, long long L) { bn_forward_body<double>(x, w, b, eps, y, mean, var, N, C, L); }
__global__ void batchnorm_backward_f32(const float* dy, const float* x, const float* w, const float* mean, const float* invstd, float* dx, float* dw, float* db, long long N, long long C, long long L) { bn_backward_body<float>(dy, x, w, mean, invstd, dx, dw, db, N, C, L); }
__global__ void batchnorm_backward_f64(const double* dy, const double* x, const double* w, const double* mean, const double* invstd, double* dx, double* dw, double* db, long long N, long long C, long long L) { bn_backward_body<double>(dy, x, w, mean, invstd, dx, dw, db, N, C, L); }
}
