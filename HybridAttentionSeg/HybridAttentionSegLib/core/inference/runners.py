"""Window runners: one way each to run a window batch through a network (``torch`` eager or OpenVINO).

A runner is called as ``runner(x, explainers) -> (logits, maps)`` with ``x`` a (B, C, *roi) float32 window
batch and ``explainers`` the pass's *non-gradient* explainers (hook-based: gates, rollout, window-attention,
segment-attention); ``logits`` is float32 (B, N, *roi) and ``maps`` one (B, 1, *roi) float32 map per explainer.
Gradient explainers (Grad-CAM) never go through a runner: the engine runs them on torch fp32 (autograd).

* :class:`TorchRunner` — eager torch, fp32, or autocast bf16 (CPU with native bf16) / fp16 / bf16 (CUDA),
  optionally with ``channels_last_3d`` inputs.
* :class:`OpenVinoRunner` — the network (and the explainers' map computation, which is pure torch on the
  hooked tensors) traced by ``openvino.convert_model`` into one graph per (methods, target class) variant and
  compiled for the CPU with an explicit precision hint (``f32``, or ``bf16`` on native-bf16 CPUs only: OpenVINO
  itself would pick bf16 on such CPUs by default). Converted graphs are saved next to the calibration cache
  (``compress_to_fp16=False``: the weights stay exactly fp32), so conversion is paid once per model and machine.

OpenVINO is used (not hand-written kernels) because it is a maintained CPU inference runtime; on this project's
2-core AVX2 CPU it ran a window of the bundled models 3-5x faster than eager torch with the same labels (see
README "Speed"). ONNX Runtime was measured too (about 1.6x) and torch.compile did not pay off (see fastpath.py).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
import warnings
from contextlib import ExitStack, nullcontext
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def run_explained(model: torch.nn.Module, x: torch.Tensor, explainers, context=None):
    """Eager forward with the explainers' hooks attached -> (float32 logits, [float32 maps])."""
    with ExitStack() as stack:
        for explainer in explainers:
            stack.enter_context(explainer)
        with context or nullcontext():
            out = model(x)
        out = out.float()
        maps = [e.window_map(x, out).float() for e in explainers]
    return out, maps


class TorchRunner:
    """Eager torch on ``device`` in ``precision`` (fp32, or autocast bf16/fp16), optionally channels-last inputs."""

    def __init__(self, name: str, model: torch.nn.Module, device: torch.device, precision: str = "fp32",
                 channels_last: bool = False):
        self.name = name
        self.model = model
        self.device = device
        self.precision = precision
        self.channels_last = channels_last

    def _context(self):
        if self.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def __call__(self, x: torch.Tensor, explainers=()):
        if self.channels_last and x.dim() == 5:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.no_grad():
            out, maps = run_explained(self.model, x, explainers, self._context())
        return out.contiguous(), [m.contiguous() for m in maps]


class _Traced(torch.nn.Module):
    """What OpenVINO traces: the network plus the explainers' map computation, as one graph."""

    def __init__(self, model: torch.nn.Module, explainers):
        super().__init__()
        self.model = model
        self.explainers = list(explainers)

    def forward(self, x):
        out, maps = run_explained(self.model, x, self.explainers)
        return (out, *maps)


def _convert(module: torch.nn.Module, example: torch.Tensor):
    """Trace ``module`` into an OpenVINO model through OpenVINO's PyTorch frontend.

    This is what ``openvino.convert_model`` does inside, minus its usage telemetry: ``convert_model`` sends
    telemetry events unless the user opted out on this machine, and a medical-imaging tool must not phone home.
    """
    from openvino.frontend import FrontEndManager
    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with torch.no_grad(), warnings.catch_warnings():
        # shape checks in the explainers/MONAI blocks are constant for a fixed window size: tracing them is fine
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        decoder = TorchScriptPythonDecoder(module, example_input=(example,))
    frontend = FrontEndManager().load_by_framework("pytorch")
    return frontend.convert(frontend.load(decoder))


class _StackT(ctypes.Structure):
    """``stack_t`` of ``sigaltstack(2)`` (Linux)."""

    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]


@contextlib.contextmanager
def kept_signal_stack():
    """Give the calling thread back its alternate signal stack after OpenVINO has compiled a model.

    OpenVINO's CPU plugin (2026.4) installs its own ``sigaltstack`` on the thread that compiles and frees that
    memory later, when the objects that own it die, without always putting the previous stack back (measured: with
    two ``ov.Core`` objects released out of order, the main thread's alternate stack points at unmapped memory).
    Python installs its signal handlers with ``SA_ONSTACK``, so the next SIGINT/SIGTERM then kills the process with
    SIGSEGV instead of cancelling the run (it crashed the test suite's real-SIGINT test). No library restores a
    thread's signal stack, so this saves and restores it with two ``sigaltstack`` calls through ctypes (Linux
    only; elsewhere it does nothing).
    """
    if not sys.platform.startswith("linux"):
        yield
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        saved = _StackT()
        if libc.sigaltstack(None, ctypes.byref(saved)) != 0:
            raise OSError(ctypes.get_errno(), "sigaltstack")
    except (OSError, AttributeError) as err:  # no libc symbol: nothing to keep
        logger.debug("alternate signal stack not saved: %s", err)
        yield
        return
    try:
        yield
    finally:
        if saved.ss_flags & 2:  # SS_DISABLE: there was none; SS_DISABLE needs no stack memory
            saved = _StackT(None, 2, 0)
        if libc.sigaltstack(ctypes.byref(saved), None) != 0:
            logger.warning("could not restore the alternate signal stack (errno %d)", ctypes.get_errno())


_CORE = None


def _core():
    """One ``openvino.Core`` for the process (OpenVINO's recommended use; it lives until exit, so no plugin
    teardown runs mid-process)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        with kept_signal_stack():
            _CORE = ov.Core()
    return _CORE


class OpenVinoRunner:
    """The network compiled by OpenVINO for the CPU; one compiled graph per (methods, target class) variant.

    Args:
        name: path name (``openvino-fp32`` / ``openvino-bf16``).
        model: the eager network (traced once per variant).
        in_channels: input channels; roi: window size (the batch dimension stays dynamic).
        precision: ``fp32`` or ``bf16`` (OpenVINO ``INFERENCE_PRECISION_HINT``).
        threads: OpenVINO inference threads (the engine passes torch's thread count).
        cache_stem: where converted graphs are saved (``STEM-VARIANT.xml/.bin``); None: not saved.
    """

    def __init__(self, name: str, model: torch.nn.Module, in_channels: int, roi, precision: str = "fp32",
                 threads: int | None = None, cache_stem: Path | None = None):
        import openvino  # noqa: F401 (fail here, at selection time, if it is missing)

        self.name = name
        self.model = model
        self.shape = (1, int(in_channels), *[int(r) for r in roi])
        self.precision = precision
        self.threads = int(threads or torch.get_num_threads())
        self.cache_stem = cache_stem
        self._compiled: dict = {}

    def _variant_key(self, explainers) -> tuple:
        return tuple((e.name, e.target_class if e.needs_class else None) for e in explainers)

    def _compile(self, explainers):
        with kept_signal_stack():
            return self._compile_variant(explainers)

    def _compile_variant(self, explainers):
        import openvino as ov

        key = self._variant_key(explainers)
        tag = "-".join(f"{n}{'' if t is None else t}" for n, t in key) or "logits"
        xml = Path(f"{self.cache_stem}-{tag}.xml") if self.cache_stem is not None else None
        core = _core()
        ov_model = None
        if xml is not None and xml.exists():
            try:
                ov_model = core.read_model(str(xml))
            except RuntimeError as err:  # a truncated/corrupt cache file: convert again
                logger.warning("ignoring unreadable OpenVINO cache %s (%s)", xml, err)
        if ov_model is None:
            ov_model = _convert(_Traced(self.model, explainers).eval(), torch.zeros(self.shape))
            if xml is not None:
                xml.parent.mkdir(parents=True, exist_ok=True)
                tmp = xml.with_name(f".tmp-{xml.name}")
                ov.save_model(ov_model, str(tmp), compress_to_fp16=False)  # keep the fp32 weights exact
                tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
                tmp.replace(xml)
        ov_model.reshape({0: ov.PartialShape([-1, *self.shape[1:]])})  # any window batch size
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY"}
        self._compiled[key] = core.compile_model(ov_model, "CPU", config)
        return self._compiled[key]

    def __call__(self, x: torch.Tensor, explainers=()):
        compiled = self._compiled.get(self._variant_key(explainers)) or self._compile(explainers)
        outputs = compiled(x.detach().float().cpu().contiguous().numpy())
        tensors = [torch.from_numpy(outputs[i].copy()) for i in range(len(outputs))]
        return tensors[0], tensors[1:]
