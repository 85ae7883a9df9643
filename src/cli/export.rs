//! `ablate export`: the deploy form of a done run, a preset or a model file as an ONNX file.

use std::path::{Path, PathBuf};

use super::format::thousands;
use candle_core::Tensor;

use crate::config::{ConfigError, DatasetKind, ModelSource};
use crate::export::int8::{self, Calibration, Int8Report, DEFAULT_CALIBRATION_IMAGES};
use crate::export::quantize::{MIN_OPSET, SCHEME};
use crate::export::{
    self, onnx::Model, onnx::OPSETS, reference, to_onnx, ExportError, ExportOptions, Exportable,
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
    /// Folder holding cifar-10-batches-bin/ (a CIFAR-10 run's images for --reference and
    /// --int8).
    #[arg(long, env = "ABLATE_DATA", default_value = "data")]
    pub data_dir: PathBuf,
    /// Write the int8 QDQ form of a done run's model (opset 13 or later), its activations
    /// calibrated on the run's training images, and measure its top-1 on the run's whole test
    /// set against the float model's; the numbers go to <out>.json beside the file.
    #[arg(long)]
    pub int8: bool,
    /// Training images (drawn by the run's seed) that calibrate the activation ranges of
    /// --int8 (all of them when the set is smaller).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CALIBRATION_IMAGES, requires = "int8")]
    pub calibration_images: usize,
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
    if args.int8 && args.opset < MIN_OPSET {
        return Err(ConfigError::invalid(
            "--opset",
            format!(
                "--int8 needs operator set {MIN_OPSET} or later (per-channel scales of \
                 DequantizeLinear), got {}",
                args.opset
            ),
        ));
    }
    if args.int8 && !run_dir {
        return Err(ConfigError::invalid(
            "--int8",
            format!(
                "expected a done run's directory: `{}` is a preset or model file, which has no \
                 training images to calibrate on nor a test set to measure the int8 cost on \
                 (train it with `ablate train` or `ablate run` and export the run)",
                args.source
            ),
        ));
    }
    if args.calibration_images == 0 {
        return Err(ConfigError::invalid(
            "--calibration-images",
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

/// The default output: the model's name, made a file name, in the current directory
/// (`-int8` added for the int8 form).
fn default_out(source: &str, run_dir: bool, int8: bool) -> PathBuf {
    let stem = if run_dir {
        Path::new(source)
            .file_name()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    } else {
        Path::new(source)
            .file_stem()
            .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
    };
    let suffix = if int8 { "-int8" } else { "" };
    PathBuf::from(format!("{stem}{suffix}.onnx"))
}

/// Where the int8 report goes: beside the model, `.json` for its extension.
fn report_path(out: &Path) -> PathBuf {
    out.with_extension("json")
}

/// Refuses an output path that cannot name a file to write: `-`, an existing device, FIFO or
/// socket, a directory (an existing one, or any path written with a trailing slash), or a file
/// in a folder that is missing or is not a folder. `example` is a file name to suggest inside a directory.
fn check_output(flag: &'static str, path: &Path, example: &str) -> Result<(), ConfigError> {
    let shown = path.display();
    if path.as_os_str() == "-" {
        return Err(ConfigError::invalid(
            flag,
            format!("`-`: export writes a file, not standard output; name one, e.g. `{example}`"),
        ));
    }
    // An existing device, FIFO or socket would be replaced by a regular file.
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        return Err(ConfigError::invalid(
            flag,
            format!("`{shown}` is not a regular file (a device, FIFO or socket); expected the path of a file to write, e.g. `{example}`"),
        ));
    }
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
    if args.int8 && report_path(out) == out {
        return Err(ConfigError::invalid(
            "--out",
            format!(
                "`{}` ends in .json, the name of the int8 report beside it; expected a .onnx file",
                out.display()
            ),
        ));
    }
    let source = Path::new(&args.source);
    let source_dir = run_dir.then(|| resolved(source)).flatten();
    let source_file = (!run_dir && source.is_file())
        .then(|| resolved(source))
        .flatten();
    let report = args.int8.then(|| report_path(out));
    let outputs = std::iter::once(("--out", out))
        .chain(args.reference.as_deref().map(|r| ("--reference", r)))
        .chain(report.as_deref().map(|r| ("--int8 report", r)));
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
                        default_out(&args.source, run_dir, args.int8).display()
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
    let example = default_out(&args.source, run_dir, args.int8);
    let out = args.out.clone().unwrap_or_else(|| example.clone());
    check_output("--out", &out, &example.to_string_lossy())?;
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
    let float = to_onnx(&item.net, item.metadata(opts.normalize_input), &opts)?;
    let (model, report, reference) = if args.int8 {
        let made = Int8Export::make(args, &item, &float, &out)?;
        (made.model, Some(made.report), made.reference)
    } else {
        let reference = match &args.reference {
            Some(_) => Some(reference_file(args, &item)?),
            None => None,
        };
        (float, None, reference)
    };
    let bytes = model.encode();
    let report = report.map(|r| Int8Report {
        onnx_bytes: bytes.len() as u64,
        ..r
    });
    // The reference and the report first, the model last: if a later file cannot be
    // written, the earlier ones are removed again and nothing this command wrote stays.
    let mut written: Vec<PathBuf> = Vec::new();
    let mut files: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    if let (Some(path), Some(tensors)) = (&args.reference, &reference) {
        files.push((path.clone(), safetensors::serialize(tensors.clone(), None)?));
    }
    if let Some(r) = &report {
        files.push((report_path(&out), serde_json::to_vec_pretty(r)?));
    }
    files.push((out.clone(), bytes.clone()));
    for (path, data) in &files {
        if let Err(e) = write(path, data) {
            for p in &written {
                let _ = std::fs::remove_file(p);
            }
            return Err(e.into());
        }
        written.push(path.clone());
    }
    let ops = export::op_counts(&model)
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let form = if args.int8 { ", int8 QDQ" } else { "" };
    println!(
        "wrote {}: {} bytes, opset {}{form}, {} nodes ({ops})",
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
    if let Some(r) = &report {
        println!("calibration {}", r.calibration.describe());
        println!(
            "test top-1 ({} images): float {:.2}%, int8 {:.2}%, difference {:+.2} points",
            r.test_images, r.float_test_top1, r.int8_test_top1, r.difference
        );
        if let Some(run) = r.run_deploy_test_top1 {
            if (run - r.float_test_top1).abs() > 1e-9 {
                println!(
                    "warning: the float top-1 here differs from the run's recorded deploy top-1 \
                     {run:.2}%"
                );
            }
        }
        println!("report  {}", report_path(&out).display());
    }
    if let (Some(path), Some(tensors)) = (&args.reference, &reference) {
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

/// The int8 form of a run's model with what it measured, and its reference tensors.
struct Int8Export {
    model: Model,
    report: Int8Report,
    reference: Option<Vec<(String, Tensor)>>,
}

impl Int8Export {
    /// Calibrates `float` on the run's training images, quantizes it, and evaluates both
    /// forms on the run's whole test set (the float one by the deploy network, the int8 one by
    /// ablate's reference computation of the QDQ graph).
    fn make(
        args: &ExportArgs,
        item: &Exportable,
        float: &Model,
        out: &Path,
    ) -> anyhow::Result<Self> {
        let dir = Path::new(&args.source);
        let cfg = item
            .run
            .as_ref()
            .ok_or_else(|| ConfigError::invalid("--int8", "expected a done run's directory"))?;
        if cfg.data.dataset == DatasetKind::Cifar10 && !cifar10_present(&args.data_dir) {
            return Err(ExportError::NoData {
                dir: dir.to_path_buf(),
                data_dir: args.data_dir.clone(),
            }
            .into());
        }
        let (train, test) =
            crate::data::load(&cfg.data, &args.data_dir).map_err(ExportError::from)?;
        let picks = int8::calibration_indices(train.len(), args.calibration_images, cfg.train.seed);
        let images: Vec<u8> = picks
            .iter()
            .flat_map(|&i| train.image(i).to_vec())
            .collect();
        let (_, calibration_input) = reference::inputs(&images, args.normalize_input)?;
        let mut model = int8::quantize(float, &calibration_input)?;
        let calibration = Calibration::new(
            picks.len(),
            train.len(),
            cfg.data.dataset.to_string(),
            cfg.train.seed,
        );

        let labels: Vec<u32> = test.labels.iter().map(|&l| l as u32).collect();
        let (x, input) = reference::inputs(&test.images, args.normalize_input)?;
        let float_logits = reference::logits(&item.net, &x)?;
        let int8_logits = int8::graph_logits(&model.graph, &input)?;
        let float_top1 = reference::top1(&float_logits, &labels)?;
        let int8_top1 = reference::top1(&int8_logits, &labels)?;

        let calibration_json = serde_json::to_string(&calibration)?;
        model.metadata.extend([
            ("quantization".to_string(), format!("int8 {SCHEME}")),
            ("calibration".to_string(), calibration_json),
            ("test_images".to_string(), labels.len().to_string()),
            ("float_test_top1".to_string(), format!("{float_top1}")),
            ("int8_test_top1".to_string(), format!("{int8_top1}")),
        ]);
        model.doc = format!("{} Quantized to int8: {SCHEME}.", model.doc);

        let reference = match &args.reference {
            None => None,
            Some(_) => {
                let n = args.reference_images;
                let random = reference::random_images(n, 0);
                let (rx, rinput) = reference::inputs(&random, args.normalize_input)?;
                let k = n.min(labels.len());
                Some(vec![
                    ("random.input".to_string(), rinput.clone()),
                    (
                        "random.logits".to_string(),
                        int8::graph_logits(&model.graph, &rinput)?,
                    ),
                    (
                        "random.float_logits".to_string(),
                        reference::logits(&item.net, &rx)?,
                    ),
                    ("test.input".to_string(), input.narrow(0, 0, k)?),
                    ("test.logits".to_string(), int8_logits.narrow(0, 0, k)?),
                    (
                        "test.float_logits".to_string(),
                        float_logits.narrow(0, 0, k)?,
                    ),
                    (
                        "test.labels".to_string(),
                        Tensor::from_vec(labels[..k].to_vec(), k, &candle_core::Device::Cpu)?,
                    ),
                ])
            }
        };
        let report = Int8Report {
            model: item.name.clone(),
            onnx: out.display().to_string(),
            onnx_bytes: 0,
            opset: model.opset,
            quantization: SCHEME,
            calibration,
            test_images: labels.len(),
            float_test_top1: float_top1,
            int8_test_top1: int8_top1,
            difference: int8_top1 - float_top1,
            run_deploy_test_top1: item.deploy_test_top1,
        };
        Ok(Self {
            model,
            report,
            reference,
        })
    }
}

/// Whether `data_dir` holds the CIFAR-10 binary files or the archive they unpack from (export
/// never downloads).
fn cifar10_present(data_dir: &Path) -> bool {
    let dir = data_dir.join(crate::data::CIFAR10_DIR);
    let files = crate::data::TRAIN_FILES
        .iter()
        .chain([&crate::data::TEST_FILE])
        .all(|f| dir.join(f).is_file());
    files || data_dir.join(crate::data::CIFAR10_ARCHIVE).is_file()
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
