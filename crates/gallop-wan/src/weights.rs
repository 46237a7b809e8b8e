//! Loading component weights from the diffusers layout: one `*.safetensors` file or shards listed
//! in `*.safetensors.index.json`, read tensor by tensor (no memory map, so the process holds one
//! copy of the weights), any float dtype converted to the compute dtype.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::error::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// The weight files of one component folder: the shards an index names, else every safetensors file.
pub fn weight_files(dir: &Path) -> crate::Result<Vec<PathBuf>> {
    let mut index = None;
    let mut singles = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".safetensors.index.json") {
            index = Some(path);
        } else if name.ends_with(".safetensors") {
            singles.push(path);
        }
    }
    if let Some(index) = index {
        let text = std::fs::read_to_string(&index)?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", index.display()))?;
        let map = json["weight_map"]
            .as_object()
            .with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        return Ok(files);
    }
    if singles.is_empty() {
        bail!("no .safetensors weights in {}", dir.display());
    }
    singles.sort();
    Ok(singles)
}

/// Read a component's `config.json` into its serde config type.
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> crate::Result<T> {
    let path = dir.join("config.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The float type a component computes in when its weights come from `vb`: f32 on the CPU,
/// the VarBuilder's dtype elsewhere. On the CPU a VarBuilder's dtype is only the dtype the big
/// matrices are held in (`Linear` weights, the T5 token table: `--dtype bf16` halves their
/// memory); they are widened to f32 for each matmul or lookup, as candle's CPU kernels compute in
/// f32 anyway. On CUDA the held and the compute dtype are the same.
pub fn compute_dtype(vb: &VarBuilder) -> DType {
    if vb.device().is_cpu() {
        DType::F32
    } else {
        vb.dtype()
    }
}

/// `vb` reading in [`compute_dtype`]: for every tensor that is not a held matrix (norms,
/// biases, embeddings of positions, convs, modulation tables).
pub fn compute_vb<'a>(vb: &VarBuilder<'a>) -> VarBuilder<'a> {
    vb.to_dtype(compute_dtype(vb))
}

/// A VarBuilder that reads each tensor from the files only when asked, with positioned reads
/// (no memory map): the process then holds exactly one copy of the weights, where a mapped file
/// would stay resident beside the converted copies until the builder is dropped.
pub fn read_var_builder(
    dir: &Path,
    dtype: DType,
    device: &Device,
) -> crate::Result<VarBuilder<'static>> {
    Ok(ComponentTensors::open(dir)?.into_var_builder(dtype, device))
}

/// One safetensors file: its tensor table and metadata, tensors read on demand.
#[derive(Debug)]
pub struct TensorFile {
    file: Arc<std::fs::File>,
    entries: HashMap<String, FileEntry>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    pub fn open(path: &Path) -> crate::Result<Self> {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let (entries, metadata) = read_safetensors_header(&file, path)?;
        Ok(Self {
            file: Arc::new(file),
            entries: entries.into_iter().collect(),
            metadata,
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.entries.get(name).map(|e| e.shape.clone())
    }

    /// A tensor converted to `dtype` (on the CPU).
    pub fn read(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        let Some(entry) = self.entries.get(name) else {
            candle_core::bail!("cannot find tensor {name}");
        };
        read_converted(&self.file, entry, dtype, READ_CHUNK_BYTES)
    }

    /// A `__metadata__` string of the file.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }
}

/// The tensors of one component folder (every weight file), read on demand and changed as they
/// are read: LoRA deltas merged ([`crate::lora::Adapters`], added to the f32 weight before it is
/// converted to the dtype it is held in) and `Linear` matrices quantized
/// ([`crate::quant::Quantize`]). Checkpoints in the original Wan layout (single-file
/// transformers: `diffusion_model.` or bare `blocks.N.self_attn...` keys) and fp8 files with
/// `scale_weight` tensors are read under the diffusers names.
pub struct ComponentTensors {
    tensors: HashMap<String, (Arc<std::fs::File>, FileEntry)>,
    adapters: crate::lora::Adapters,
    quantize: Option<crate::quant::Quantize>,
    /// Weights a `Linear` asked to hold quantized (it asked for their `weight_scale`).
    quantized: Mutex<std::collections::HashSet<String>>,
    /// Scales of quantized weights read, until their `weight_scale` is read.
    scales: Mutex<HashMap<String, Tensor>>,
}

impl ComponentTensors {
    pub fn open(dir: &Path) -> crate::Result<Self> {
        let mut tensors = HashMap::new();
        for path in weight_files(dir)? {
            let file = TensorFile::open(&path)?;
            for (name, entry) in file.entries {
                tensors.insert(name, (file.file.clone(), entry));
            }
        }
        Ok(Self {
            tensors: crate::transformer::keys::rename_to_diffusers(tensors),
            adapters: Default::default(),
            quantize: None,
            quantized: Default::default(),
            scales: Default::default(),
        })
    }

    /// The shape of a tensor, by its diffusers name.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|(_, e)| e.shape.clone())
    }

    /// Merge these LoRAs into the tensors they change, as they are read.
    pub fn with_adapters(mut self, adapters: crate::lora::Adapters) -> Self {
        self.adapters = adapters;
        self
    }

    /// Hold the matrices each `Linear` reads quantized.
    pub fn with_quantize(mut self, quantize: Option<crate::quant::Quantize>) -> Self {
        self.quantize = quantize;
        self
    }

    pub fn into_var_builder(self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self), dtype, device.clone())
    }

    fn read_file(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        let Some((file, entry)) = self.tensors.get(name) else {
            candle_core::bail!("cannot find tensor {name}");
        };
        read_converted(file, entry, dtype, READ_CHUNK_BYTES)
    }

    /// A tensor as held: read in `dtype`, or read in f32, LoRA deltas added, then converted.
    fn read(&self, name: &str, dtype: DType) -> candle_core::Result<Tensor> {
        match self.adapters.changes(name) {
            true => self.read_merged(name)?.to_dtype(dtype),
            false => self.read_file(name, dtype),
        }
    }

    /// A weight in f32 with its LoRA deltas added (a published fp8 weight widened by its scale).
    fn read_merged(&self, name: &str) -> candle_core::Result<Tensor> {
        let base = match self.file_scale(name) {
            Some(scale) => {
                let q = self.read_file(name, DType::F8E4M3)?;
                crate::quant::dequantize(&q, &scale)?
            }
            None => self.read_file(name, DType::F32)?,
        };
        Ok(self.adapters.merge(name, &base)?.unwrap_or(base))
    }

    /// The `[out]` scale a published fp8 file keeps beside `name`.
    fn file_scale(&self, name: &str) -> Option<Tensor> {
        let scale_name = format!("{name}_scale");
        let shape = self.shape(name)?;
        let scale = self.read_file(&scale_name, DType::F32).ok()?;
        scale
            .flatten_all()
            .ok()?
            .broadcast_as(shape[0])
            .ok()?
            .contiguous()
            .ok()
    }

    /// How the `Linear` weight `name` (`X.weight`) is held quantized, if it is: as the settings
    /// say, else as the file stores it (fp8 with scales).
    fn quantized_kind(&self, name: &str) -> Option<crate::quant::Quantize> {
        if self.shape(name)?.len() != 2 {
            return None;
        }
        let in_file = self.tensors.contains_key(&format!("{name}_scale"));
        self.quantize
            .or(in_file.then_some(crate::quant::Quantize::Fp8))
    }

    /// A quantized weight and its `[out]` scale: a published fp8 weight as it is, else the f32
    /// weight (LoRA merged) quantized per output channel.
    fn read_quantized(&self, name: &str) -> candle_core::Result<(Tensor, Tensor)> {
        let kind = self.quantized_kind(name).expect("registered as quantized");
        if kind == crate::quant::Quantize::Fp8
            && !self.adapters.changes(name)
            && let Some(scale) = self.file_scale(name)
        {
            return Ok((self.read_file(name, DType::F8E4M3)?, scale));
        }
        crate::quant::quantize(&self.read_merged(name)?, kind)
    }
}

impl candle_nn::var_builder::SimpleBackend for ComponentTensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.get_unchecked(name, dtype, dev)?;
        if t.dims() != s.dims() {
            candle_core::bail!(
                "shape mismatch for {name}: expected {:?}, file has {:?}",
                s.dims(),
                t.dims()
            );
        }
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if self.quantized.lock().unwrap().contains(name) {
            let (q, scale) = self.read_quantized(name)?;
            self.scales
                .lock()
                .unwrap()
                .insert(format!("{name}_scale"), scale);
            return q.to_device(dev);
        }
        if let Some(weight) = name.strip_suffix("_scale")
            && self.quantized.lock().unwrap().contains(weight)
        {
            let scale = match self.scales.lock().unwrap().remove(name) {
                Some(scale) => scale,
                None => self.read_quantized(weight)?.1,
            };
            return scale.to_device(dev);
        }
        self.read(name, dtype)?.to_device(dev)
    }

    /// `X.weight_scale` is how a `Linear` asks whether its weight is held quantized; answering
    /// yes registers the weight to be read quantized.
    fn contains_tensor(&self, name: &str) -> bool {
        if let Some(weight) = name.strip_suffix("_scale")
            && weight.ends_with(".weight")
            && self.quantized_kind(weight).is_some()
        {
            self.quantized.lock().unwrap().insert(weight.to_string());
            return true;
        }
        self.tensors.contains_key(name)
    }
}

/// Where one tensor lies in a safetensors file.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

type Header = (Vec<(String, FileEntry)>, HashMap<String, String>);

/// The tensor table of a safetensors file: an 8-byte little-endian header length, a JSON header
/// of `name -> {dtype, shape, data_offsets}` (and `__metadata__` strings), then the data.
fn read_safetensors_header(file: &std::fs::File, path: &Path) -> crate::Result<Header> {
    use std::os::unix::fs::FileExt;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    let header_len = u64::from_le_bytes(len);
    crate::error::ensure!(
        header_len < 100 << 20,
        "{}: safetensors header of {header_len} bytes",
        path.display()
    );
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("parsing the safetensors header of {}", path.display()))?;
    let data_start = 8 + header_len;
    let mut entries = Vec::new();
    let mut metadata = HashMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            for (k, v) in info.as_object().into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    metadata.insert(k.clone(), v.to_string());
                }
            }
            continue;
        }
        let dtype = match info["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
            Some("F8_E4M3") => DType::F8E4M3,
            Some("I64") => DType::I64,
            Some("U32") => DType::U32,
            Some("U8") => DType::U8,
            // A tensor no component reads (a file of test inputs beside the weights, say) must
            // not stop the load; it is left out and reported as missing if something asks for it.
            _ => continue,
        };
        let shape: Vec<usize> = serde_json::from_value(info["shape"].clone())
            .with_context(|| format!("{}: shape of {name}", path.display()))?;
        let offsets: [u64; 2] = serde_json::from_value(info["data_offsets"].clone())
            .with_context(|| format!("{}: data_offsets of {name}", path.display()))?;
        let len = (offsets[1] - offsets[0]) as usize;
        crate::error::ensure!(
            len == shape.iter().product::<usize>() * dtype.size_in_bytes(),
            "{}: tensor {name} has {len} bytes for shape {shape:?}",
            path.display()
        );
        entries.push((
            name,
            FileEntry {
                dtype,
                shape,
                start: data_start + offsets[0],
                len,
            },
        ));
    }
    Ok((entries, metadata))
}

/// Bytes of a file tensor read and converted at a time.
const READ_CHUNK_BYTES: usize = 64 << 20;

/// A file tensor in `dtype`, read and converted `chunk_bytes` at a time straight into the result:
/// the process holds the tensor once in `dtype` plus one chunk, never the file's bytes beside it
/// (an f32 file read as bf16 never has an f32 copy of the tensor, let alone of the model).
fn read_converted(
    file: &std::fs::File,
    entry: &FileEntry,
    dtype: DType,
    chunk_bytes: usize,
) -> candle_core::Result<Tensor> {
    use std::os::unix::fs::FileExt;
    let size = entry.dtype.size_in_bytes();
    let elems = entry.len / size;
    let out = Tensor::zeros(elems, dtype, &Device::Cpu)?;
    let chunk = (chunk_bytes / size).max(1);
    let mut bytes = vec![0u8; chunk.min(elems) * size];
    let mut done = 0;
    while done < elems {
        let n = chunk.min(elems - done);
        let part = &mut bytes[..n * size];
        file.read_exact_at(part, entry.start + (done * size) as u64)?;
        let converted =
            Tensor::from_raw_buffer(part, entry.dtype, &[n], &Device::Cpu)?.to_dtype(dtype)?;
        out.slice_set(&converted, 0, done)?;
        done += n;
    }
    out.reshape(entry.shape.as_slice())
}

/// A weight source for checking a loader against a checkpoint manifest (tensor name -> shape)
/// without any weights: every read must name a manifest tensor with the manifest's shape, and
/// gets zeros as a zero-stride broadcast (no allocation, even at 14B shapes). Afterwards
/// `unread()` lists manifest tensors the loader never asked for. Manifests of the original Wan
/// layout and of fp8 files with scales are read under diffusers names, as files are
/// ([`ComponentTensors`]); with [`Self::with_quantize`] every `Linear` matrix is held quantized.
pub struct TrackedWeights {
    shapes: Arc<HashMap<String, Vec<usize>>>,
    /// Each name read, with the dtype the loader asked for it in (the dtype it is held in).
    read: Arc<Mutex<std::collections::BTreeMap<String, DType>>>,
    quantize: Option<crate::quant::Quantize>,
}

impl TrackedWeights {
    pub fn new(shapes: HashMap<String, Vec<usize>>) -> Self {
        Self {
            shapes: Arc::new(crate::transformer::keys::rename_to_diffusers(shapes)),
            read: Default::default(),
            quantize: None,
        }
    }

    /// Hold every `Linear` matrix quantized, as `--quantize` does.
    pub fn with_quantize(mut self, quantize: Option<crate::quant::Quantize>) -> Self {
        self.quantize = quantize;
        self
    }

    /// Read a manifest file `{"config": {...}, "tensors": {name: shape}}`; returns the config too.
    pub fn from_manifest(path: &Path) -> crate::Result<(serde_json::Value, Self)> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: serde_json::Value,
            tensors: HashMap<String, Vec<usize>>,
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let m: Manifest =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok((m.config, Self::new(m.tensors)))
    }

    /// A VarBuilder over the manifest; reads are recorded here.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        let backend = TrackedBackend {
            shapes: self.shapes.clone(),
            read: self.read.clone(),
            quantize: self.quantize,
            quantized: Default::default(),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Names the loader read so far.
    pub fn read_names(&self) -> std::collections::BTreeSet<String> {
        self.read.lock().unwrap().keys().cloned().collect()
    }

    /// Bytes of the tensors read so far, each in the dtype the loader asked for it in: the
    /// weights a loaded component holds (a quantized matrix's `[out]` scales included).
    pub fn held_bytes(&self) -> u64 {
        let read = self.read.lock().unwrap();
        read.iter()
            .map(|(name, dtype)| {
                let elems: usize = match self.shapes.get(name) {
                    Some(shape) => shape.iter().product(),
                    None => scale_len(&self.shapes, name).unwrap_or(0),
                };
                (elems * dtype.size_in_bytes()) as u64
            })
            .sum()
    }

    /// Manifest tensors the loader never read, sorted.
    pub fn unread(&self) -> Vec<String> {
        let read = self.read.lock().unwrap();
        let mut names: Vec<String> = self
            .shapes
            .keys()
            .filter(|n| !read.contains_key(*n))
            .cloned()
            .collect();
        names.sort();
        names
    }
}

/// The length of the per-channel scale `X.weight_scale` of the matrix `X.weight`.
fn scale_len(shapes: &HashMap<String, Vec<usize>>, scale: &str) -> Option<usize> {
    let weight = scale.strip_suffix("_scale")?;
    shapes.get(weight).and_then(|s| s.first().copied())
}

struct TrackedBackend {
    shapes: Arc<HashMap<String, Vec<usize>>>,
    /// Each name read, with the dtype the loader asked for it in (the dtype it is held in).
    read: Arc<Mutex<std::collections::BTreeMap<String, DType>>>,
    quantize: Option<crate::quant::Quantize>,
    /// Matrices held quantized, with how.
    quantized: Mutex<HashMap<String, crate::quant::Quantize>>,
}

impl candle_nn::var_builder::SimpleBackend for TrackedBackend {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        if let Some(shape) = self.shapes.get(name)
            && shape.as_slice() != s.dims()
        {
            candle_core::bail!(
                "shape mismatch for {name}: loader expects {:?}, manifest has {shape:?}",
                s.dims()
            );
        }
        self.get_unchecked(name, dtype, dev)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<candle_core::Tensor> {
        let quantized = self.quantized.lock().unwrap().get(name).copied();
        let (shape, dtype) = match (self.shapes.get(name), quantized) {
            (Some(shape), Some(kind)) => (shape.clone(), kind.dtype()),
            (Some(shape), None) => (shape.clone(), dtype),
            // A scale made at load for a matrix quantized then.
            (None, _) => match scale_len(&self.shapes, name) {
                Some(out) if name.ends_with(".weight_scale") => (vec![out], DType::F32),
                _ => candle_core::bail!("tensor {name} is not in the manifest"),
            },
        };
        self.read.lock().unwrap().insert(name.to_string(), dtype);
        candle_core::Tensor::zeros((), dtype, dev)?.broadcast_as(shape.as_slice())
    }

    /// As [`ComponentTensors`] answers it: a `Linear` asking for its `weight_scale` gets one
    /// when the manifest has it (an fp8 file) or its matrix is to be quantized.
    fn contains_tensor(&self, name: &str) -> bool {
        if let Some(weight) = name.strip_suffix("_scale")
            && weight.ends_with(".weight")
            && self.shapes.get(weight).is_some_and(|s| s.len() == 2)
        {
            let kind = match self.shapes.contains_key(name) {
                true => Some(self.quantize.unwrap_or(crate::quant::Quantize::Fp8)),
                false => self.quantize,
            };
            if let Some(kind) = kind {
                self.quantized
                    .lock()
                    .unwrap()
                    .insert(weight.to_string(), kind);
                return true;
            }
        }
        self.shapes.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_tensors_convert_chunk_by_chunk_as_a_whole_conversion_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = Tensor::randn(0f32, 1.0, (7, 5), &Device::Cpu).unwrap();
        candle_core::safetensors::save(&[("w", t.clone())].into_iter().collect(), &path).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (_, entry) = read_safetensors_header(&file, &path)
            .unwrap()
            .0
            .into_iter()
            .find(|(name, _)| name == "w")
            .unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            let whole = t.to_dtype(dtype).unwrap().to_dtype(DType::F32).unwrap();
            // Chunks of 3 elements (the last one short), of one, and the whole tensor at once.
            for chunk_bytes in [12, 1, 1 << 20] {
                let read = read_converted(&file, &entry, dtype, chunk_bytes).unwrap();
                assert_eq!((read.dtype(), read.dims()), (dtype, &[7, 5][..]));
                let read = read.to_dtype(DType::F32).unwrap();
                let diff = crate::testing::max_abs_diff(&read, &whole).unwrap();
                assert_eq!(diff, 0.0, "{dtype:?}, chunks of {chunk_bytes} bytes");
            }
        }
    }
}
