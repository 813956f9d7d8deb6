// Runs an ONNX model in onnxruntime-node (npm), for tests/python/test_wheel.py:
//   node run_model.js MODEL.onnx IO.json
// IO.json: {"inputs": {name: {"file", "dtype", "shape"}}, "out_dir"}; the raw little-endian data
// of each input is in its file. Writes out_dir/<i>.bin per output and out_dir/outputs.json
// ([{name, dtype, shape, file}]). Exit status 1 with the error on stderr if anything fails.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const ARRAYS = {
  float32: Float32Array,
  float64: Float64Array,
  int32: Int32Array,
  int64: BigInt64Array,
  uint8: Uint8Array,
  bool: Uint8Array,
};

function typed(dtype, buf) {
  const Kind = ARRAYS[dtype];
  if (!Kind) throw new Error(`unsupported input type ${dtype}`);
  const copy = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  return new Kind(copy);
}

async function main() {
  const [modelPath, ioPath] = process.argv.slice(2);
  const io = JSON.parse(fs.readFileSync(ioPath, 'utf8'));
  const feeds = {};
  for (const [name, t] of Object.entries(io.inputs)) {
    feeds[name] = new ort.Tensor(t.dtype, typed(t.dtype, fs.readFileSync(t.file)), t.shape);
  }
  const session = await ort.InferenceSession.create(modelPath);
  const results = await session.run(feeds);
  const written = session.outputNames.map((name, i) => {
    const t = results[name];
    const file = path.join(io.out_dir, `${i}.bin`);
    fs.writeFileSync(file, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    return { name, dtype: t.type, shape: t.dims, file };
  });
  fs.writeFileSync(path.join(io.out_dir, 'outputs.json'), JSON.stringify(written));
}

main().catch((e) => {
  console.error(`run_model.js: ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
