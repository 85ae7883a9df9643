//! `ablate export`: the deploy form of a done run, a preset or a model file as an ONNX file.

use std::path::{Path, PathBuf};

use super::format::thousands;
use crate::config::{ConfigError, ModelSource};
use crate::export::{
    self, onnx::OPSETS, reference, to_onnx, ExportError, ExportOptions, Exportable,
};
use crate::io::{resolved, write_atomic};
use crate::run_dir::RUN_FILES;

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A done run's directory (exports its trained model.safetensors), or a preset or model
    /// TOML file (exports freshly initialised weights, for size and latency checks).
    pub source: String,
    /// The ONNX file to write [default: <model name>.onnx in the current directory].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// ONNX operator set (11 to 21).
    #[arg(long, default_value_t = export::DEFAULT_OPSET)]
    pub opset: i64,
    /// Override a model key of a preset or model file, e.g. `--set p=2` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Seed of the fresh weights of a preset or model file [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Take pixels scaled to [0, 1] as input and normalise inside the graph (two more nodes)
    /// instead of expecting normalised input.
    #[arg(long)]
    pub normalize_input: bool,
    /// Also write a safetensors file of images (in the ONNX input's convention) with ablate's
    /// own logits for them, to check another runtime against: `random.*` (seeded random
    /// images) and, for a run dir, `test.*` (its first test images, with `test.labels`).
    #[arg(long, value_name = "FILE")]
    pub reference: Option<PathBuf>,
    /// Images per set in the reference file.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub reference_images: usize,
    /// Folder holding cifar-10-batches-bin/ (a CIFAR-10 run's test images for --reference).
    #[arg(long, env = "ABLATE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
}

fn check(args: &ExportArgs, run_dir: bool) -> Result<(), ConfigError> {
    if !OPSETS.contains(&args.opset) {
        return Err(ConfigError::invalid(
            "--opset",
            format!(
                "expected an operator set from {} to {}, got {}",
                OPSETS.start(),
                OPSETS.end(),
                args.opset
            ),
        ));
    }
    if args.reference_images == 0 {
        return Err(ConfigError::invalid(
            "--reference-images",
            "expected a positive number, got 0",
        ));
    }
    if run_dir && !args.set.is_empty() {
        return Err(ConfigError::invalid(
            "--set",
            "a run dir exports the model it trained; --set applies to a preset or model file",
        ));
    }
    if run_dir && args.seed.is_some() {
        return Err(ConfigError::invalid(
            "--seed",
            "a run dir exports its trained weights; --seed applies to a preset or model file",
        ));
    }
    Ok(())
}

/// The default output: the model's name, made a file name, in the current directory.
fn default_out(source: &str, run_dir: bool) -> PathBuf {
    let stem = if run_dir {
        Path::new(source)
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    } else {
        Path::new(source)
            .file_stem()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    };
    PathBuf::from(format!("{stem}.onnx"))
}

/// Refuses an output path that cannot name a file to write: a directory (an existing one, or
/// any path written with a trailing slash), or a file in a folder that is missing or is not a
/// folder. `example` is a file name to suggest inside a directory.
fn check_output(flag: &'static str, path: &Path, example: &str) -> Result<(), ConfigError> {
    let shown = path.display();
    let trailing_slash = path
        .as_os_str()
        .to_string_lossy()
        .ends_with(std::path::is_separator);
    if path.is_dir() || trailing_slash || path.file_name().is_none() {
        let dir = shown.to_string();
        return Err(ConfigError::invalid(
            flag,
            format!(
                "`{shown}` is a directory; expected the path of the file to write, e.g. `{}`",
                Path::new(dir.trim_end_matches(std::path::is_separator))
                    .join(example)
                    .display()
            ),
        ));
    }
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        let what = if folder.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(ConfigError::invalid(
            flag,
            format!(
                "`{shown}`: its folder `{}` {what}; expected a file in an existing directory",
                folder.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses outputs that would overwrite what is being exported or each other: a file of the
/// run dir (its trained model, checkpoint, config, ...), the model file being exported, or
/// `--out` and `--reference` naming one file. Paths are compared resolved, so no spelling
/// (`..`, a symlink, a relative path) slips through; both outputs' folders exist already.
fn check_distinct(args: &ExportArgs, out: &Path, run_dir: bool) -> Result<(), ConfigError> {
    let source = Path::new(&args.source);
    let source_dir = run_dir.then(|| resolved(source)).flatten();
    let source_file = (!run_dir && source.is_file())
        .then(|| resolved(source))
        .flatten();
    let outputs = std::iter::once(("--out", out))
        .chain(args.reference.as_deref().map(|r| ("--reference", r)));
    let mut seen: Vec<(&'static str, PathBuf)> = Vec::new();
    for (flag, path) in outputs {
        let Some(full) = resolved(path) else {
            continue;
        };
        let shown = path.display();
        if let Some(dir) = &source_dir {
            let name = full.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if full.parent() == Some(dir.as_path()) && RUN_FILES.contains(&name) {
                return Err(ConfigError::invalid(
                    flag,
                    format!(
                        "`{shown}` is the run dir's own {name}; expected a path that is not one \
                         of the run dir's files, e.g. `{}`",
                        default_out(&args.source, run_dir).display()
                    ),
                ));
            }
        }
        if source_file.as_ref() == Some(&full) {
            return Err(ConfigError::invalid(
                flag,
                format!("`{shown}` is the model file being exported; expected another file"),
            ));
        }
        if let Some((other, _)) = seen.iter().find(|(_, p)| *p == full) {
            return Err(ConfigError::invalid(
                flag,
                format!("`{shown}` is the {other} file too; expected two different files"),
            ));
        }
        seen.push((flag, full));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically; a failure is bad input (the path), not a crash.
fn write(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    write_atomic(path, bytes).map_err(|e| ExportError::Write {
        path: path.to_path_buf(),
        message: e.root_cause().to_string(),
    })
}

pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let run_dir = Path::new(&args.source).is_dir();
    check(args, run_dir)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.source, run_dir));
    check_output(
        "--out",
        &out,
        &default_out(&args.source, run_dir).to_string_lossy(),
    )?;
    if let Some(path) = &args.reference {
        check_output("--reference", path, "reference.safetensors")?;
    }
    check_distinct(args, &out, run_dir)?;
    let item = if run_dir {
        Exportable::from_run_dir(Path::new(&args.source))?
    } else {
        Exportable::from_model(
            &ModelSource::parse(&args.source),
            &args.set,
            args.seed.unwrap_or(0),
        )?
    };
    if args.reference.is_some() {
        let sets = if item.run.is_some() { 2 } else { 1 };
        reference::check_fits(item.net.spec(), args.reference_images, sets)?;
    }
    let opts = ExportOptions {
        opset: args.opset,
        normalize_input: args.normalize_input,
    };
    let model = to_onnx(&item.net, item.metadata(opts.normalize_input), &opts)?;
    let bytes = model.encode();
    let reference = match &args.reference {
        Some(path) => Some((path, reference_file(args, &item)?)),
        None => None,
    };
    // The reference first: if the model cannot be written, nothing this command wrote stays.
    if let Some((path, tensors)) = &reference {
        let serialised = safetensors::serialize(tensors.clone(), None)?;
        write(path, &serialised)?;
    }
    if let Err(e) = write(&out, &bytes) {
        if let Some((path, _)) = &reference {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    let ops = export::op_counts(&model)
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    println!(
        "wrote {}: {} bytes, opset {}, {} nodes ({ops})",
        out.display(),
        thousands(bytes.len() as u64),
        opts.opset,
        model.graph.nodes.len()
    );
    println!("model   {}", item.name);
    println!("weights {}", item.weights);
    if let Some(top1) = item.deploy_test_top1 {
        println!("deploy test top-1 {top1:.2}%");
    }
    println!("input   {}", export::input_doc(opts.normalize_input));
    if let Some((path, tensors)) = &reference {
        let sets: Vec<String> = tensors
            .iter()
            .filter(|(k, _)| k.ends_with(".logits"))
            .map(|(k, t)| {
                format!(
                    "{} ({} images)",
                    k.trim_end_matches(".logits"),
                    t.dim(0).unwrap_or(0)
                )
            })
            .collect();
        println!("reference {}: {}", path.display(), sets.join(", "));
    }
    Ok(())
}

/// The reference tensors: a random set, and a run dir's test set.
fn reference_file(
    args: &ExportArgs,
    item: &Exportable,
) -> anyhow::Result<Vec<(String, candle_core::Tensor)>> {
    let n = args.reference_images;
    let mut tensors = Vec::new();
    let images = reference::random_images(n, args.seed.unwrap_or(0));
    let (input, logits) = reference::reference(&item.net, &images, args.normalize_input)?;
    tensors.push(("random.input".to_string(), input));
    tensors.push(("random.logits".to_string(), logits));
    if let Some(cfg) = &item.run {
        let (_, test) = crate::data::load(&cfg.data, &args.data_dir)?;
        let (images, labels) = reference::first_images(&test, n);
        let (input, logits) = reference::reference(&item.net, &images, args.normalize_input)?;
        let count = labels.len();
        tensors.push(("test.input".to_string(), input));
        tensors.push(("test.logits".to_string(), logits));
        tensors.push((
            "test.labels".to_string(),
            candle_core::Tensor::from_vec(labels, count, &candle_core::Device::Cpu)?,
        ));
    }
    Ok(tensors)
}
