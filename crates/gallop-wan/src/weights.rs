//! Loading component weights from the diffusers layout: one `*.safetensors` file or shards listed
//! in `*.safetensors.index.json`, read tensor by tensor (no memory map, so the process holds one
//! copy of the weights), any float dtype converted to the compute dtype.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

/// The weight files of one component folder: the shards an index names, else every safetensors file.
pub fn weight_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
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
pub fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> anyhow::Result<T> {
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
) -> anyhow::Result<VarBuilder<'static>> {
    let mut tensors = std::collections::HashMap::new();
    for path in weight_files(dir)? {
        let file = std::sync::Arc::new(
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        );
        for (name, entry) in read_safetensors_header(&file, &path)? {
            tensors.insert(name, (file.clone(), entry));
        }
    }
    Ok(VarBuilder::from_backend(
        Box::new(FileTensors { tensors }),
        dtype,
        device.clone(),
    ))
}

/// Where one tensor lies in a safetensors file.
struct FileEntry {
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// The tensor table of a safetensors file: an 8-byte little-endian header length, a JSON header
/// of `name -> {dtype, shape, data_offsets}`, then the data.
fn read_safetensors_header(
    file: &std::fs::File,
    path: &Path,
) -> anyhow::Result<Vec<(String, FileEntry)>> {
    use std::os::unix::fs::FileExt;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .with_context(|| format!("reading {}", path.display()))?;
    let header_len = u64::from_le_bytes(len);
    anyhow::ensure!(
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
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = match info["dtype"].as_str() {
            Some("F32") => DType::F32,
            Some("F16") => DType::F16,
            Some("BF16") => DType::BF16,
            Some("F64") => DType::F64,
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
        anyhow::ensure!(
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
    Ok(entries)
}

struct FileTensors {
    tensors: std::collections::HashMap<String, (std::sync::Arc<std::fs::File>, FileEntry)>,
}

/// Bytes of a file tensor read and converted at a time.
const READ_CHUNK_BYTES: usize = 64 << 20;

impl FileTensors {
    fn read(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        let Some((file, entry)) = self.tensors.get(name) else {
            candle_core::bail!("cannot find tensor {name}");
        };
        read_converted(file, entry, dtype, READ_CHUNK_BYTES)?.to_device(dev)
    }
}

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

impl candle_nn::var_builder::SimpleBackend for FileTensors {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let t = self.read(name, dtype, dev)?;
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
        self.read(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

/// A weight source for checking a loader against a checkpoint manifest (tensor name -> shape)
/// without any weights: every read must name a manifest tensor with the manifest's shape, and
/// gets zeros as a zero-stride broadcast (no allocation, even at 14B shapes). Afterwards
/// `unread()` lists manifest tensors the loader never asked for.
pub struct TrackedWeights {
    shapes: std::sync::Arc<std::collections::HashMap<String, Vec<usize>>>,
    /// Each name read, with the dtype the loader asked for it in (the dtype it is held in).
    read: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, DType>>>,
}

impl TrackedWeights {
    pub fn new(shapes: std::collections::HashMap<String, Vec<usize>>) -> Self {
        Self {
            shapes: std::sync::Arc::new(shapes),
            read: Default::default(),
        }
    }

    /// Read a manifest file `{"config": {...}, "tensors": {name: shape}}`; returns the config too.
    pub fn from_manifest(path: &Path) -> anyhow::Result<(serde_json::Value, Self)> {
        #[derive(serde::Deserialize)]
        struct Manifest {
            config: serde_json::Value,
            tensors: std::collections::HashMap<String, Vec<usize>>,
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
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
    }

    /// Names the loader read so far.
    pub fn read_names(&self) -> std::collections::BTreeSet<String> {
        self.read.lock().unwrap().keys().cloned().collect()
    }

    /// Bytes of the tensors read so far, each in the dtype the loader asked for it in: the
    /// weights a loaded component holds.
    pub fn held_bytes(&self) -> u64 {
        let read = self.read.lock().unwrap();
        read.iter()
            .map(|(name, dtype)| {
                let elems: usize = self.shapes[name].iter().product();
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

struct TrackedBackend {
    shapes: std::sync::Arc<std::collections::HashMap<String, Vec<usize>>>,
    /// Each name read, with the dtype the loader asked for it in (the dtype it is held in).
    read: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, DType>>>,
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
        let Some(shape) = self.shapes.get(name) else {
            candle_core::bail!("tensor {name} is not in the manifest");
        };
        self.read.lock().unwrap().insert(name.to_string(), dtype);
        candle_core::Tensor::zeros((), dtype, dev)?.broadcast_as(shape.as_slice())
    }

    fn contains_tensor(&self, name: &str) -> bool {
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
