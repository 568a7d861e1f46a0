"""Numba CPU kernels. ``KERNELS`` maps the name of a reference function (decorated with
``backend.kernel`` in minitorch_cifar/nn) to its fast twin here, with the same signature and result."""
from . import activation, conv, norm, pool

KERNELS = {
    "im2col": conv.im2col,
    "col2im": conv.col2im,
    "gemm_to_nchw": conv.gemm_to_nchw,
    "nchw_to_gemm": conv.nchw_to_gemm,
    "maxpool_forward": pool.maxpool_forward,
    "maxpool_backward": pool.maxpool_backward,
    "batchnorm_forward": norm.batchnorm_forward,
    "batchnorm_backward": norm.batchnorm_backward,
    "relu_forward": activation.relu_forward,
    "relu_backward": activation.relu_backward,
    "gelu_forward": activation.gelu_forward,
    "gelu_backward": activation.gelu_backward,
}
