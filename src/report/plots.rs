//! The report's figures, each as SVG and PNG (plotters; text in DejaVu Sans, embedded, so the
//! PNGs render the same on every machine):
//! - training curves of a run: train/test top-1 and loss against epoch (the paper's Figure 3);
//! - top-1 against FLOPs, one point per group, with the Pareto front;
//! - training time per epoch per group.

use anyhow::Context;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::aggregate::GroupRow;
use super::tables::Metric;
use crate::run_dir::{read_metrics, EpochRecord, PruningEvent};

/// DejaVu Sans (Bitstream Vera license, `assets/fonts/DejaVuSans.LICENSE`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .map_err(|_| ())
            .expect("the embedded font parses");
    });
}

type DrawResult = Result<(), Box<dyn Error>>;

/// A run's curves from its `metrics.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub epoch: Vec<f64>,
    pub train_top1: Vec<f64>,
    pub test_top1: Vec<f64>,
    pub train_loss: Vec<f64>,
    pub test_loss: Vec<f64>,
    /// The pruning schedule's events, drawn as vertical lines (empty: none known).
    pub pruning: Vec<PruningEvent>,
}

impl Curves {
    /// `None` when the run has no recorded epoch.
    pub fn read(metrics: &Path) -> anyhow::Result<Option<Self>> {
        if !metrics.is_file() {
            return Ok(None);
        }
        let records = read_metrics(metrics)?;
        if records.is_empty() {
            return Ok(None);
        }
        let col = |f: fn(&EpochRecord) -> f64| records.iter().map(f).collect();
        Ok(Some(Self {
            epoch: col(|r| r.epoch as f64),
            train_top1: col(|r| r.train_top1),
            test_top1: col(|r| r.test_top1),
            train_loss: col(|r| r.train_loss),
            test_loss: col(|r| r.test_loss),
            pruning: Vec::new(),
        }))
    }
}

/// A figure any plotters backend can draw.
trait Figure {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static;
}

/// The innermost cause of `e` as one line (plotters wraps an I/O error such as a full disk in
/// layers whose text is a debug dump).
fn innermost(e: &(dyn Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Draws `figure` into `<stem>.svg` and `<stem>.png` of `size` pixels; returns both paths.
fn both(stem: &Path, size: (u32, u32), figure: &impl Figure) -> anyhow::Result<Vec<PathBuf>> {
    register_font();
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    // Drawn to temp names of this process (reports may run at once into one dir), then
    // renamed: a report never leaves half a figure, and removes its temp files on failure.
    let pid = std::process::id();
    let svg_tmp = stem.with_extension(format!("tmp-{pid}.svg"));
    let png_tmp = stem.with_extension(format!("tmp-{pid}.png"));
    let drawn = (|| -> anyhow::Result<()> {
        figure
            .draw(SVGBackend::new(&svg_tmp, size).into_drawing_area())
            .map_err(|e| anyhow::anyhow!("drawing {}: {}", svg.display(), innermost(&*e)))?;
        // Pixels drawn in memory, encoded and written here: a full disk is one plain error.
        let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
        figure
            .draw(BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area())
            .map_err(|e| anyhow::anyhow!("drawing {}: {}", png.display(), innermost(&*e)))?;
        let mut encoded = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut encoded),
            &pixels,
            size.0,
            size.1,
            image::ColorType::Rgb8,
        )
        .map_err(|e| anyhow::anyhow!("encoding {}: {e}", png.display()))?;
        std::fs::write(&png_tmp, &encoded).with_context(|| format!("writing {}", png.display()))?;
        std::fs::rename(&svg_tmp, &svg).with_context(|| format!("writing {}", svg.display()))?;
        std::fs::rename(&png_tmp, &png).with_context(|| format!("writing {}", png.display()))
    })();
    if drawn.is_err() {
        let _ = std::fs::remove_file(&svg_tmp);
        let _ = std::fs::remove_file(&png_tmp);
    }
    drawn.map(|()| vec![svg, png])
}

struct CurvesFigure<'a>(&'a str, &'a Curves);
struct ParetoFigure<'a>(&'a [(String, f64, f64)], &'a str);
struct TimeFigure<'a>(&'a [(String, f64)]);

impl Figure for CurvesFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        curves_figure(root, self.0, self.1)
    }
}

impl Figure for ParetoFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        pareto_figure(root, self.0, self.1)
    }
}

impl Figure for TimeFigure<'_> {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        time_figure(root, self.0)
    }
}

fn range(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let span = (hi - lo).max(1e-9);
    (lo - pad * span, hi + pad * span)
}

/// Colour of a pruning event's line.
const PRUNING: RGBColor = RGBColor(150, 150, 150);
/// Colour of the learned-dsc conversion's line.
const CONVERSION: RGBColor = RGBColor(44, 160, 44);

/// Whether `e` is the conversion of learned-dsc convs to their separable form.
fn is_conversion(e: &PruningEvent) -> bool {
    e.structure.contains("converted")
}

/// One panel: `series` (colour, y values) against `x`; blue is train, red is test; a dashed
/// vertical line at each pruning event.
fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    y_desc: &str,
    x: &[f64],
    series: &[(RGBColor, &[f64])],
    pruning: &[PruningEvent],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x_max = x.iter().copied().fold(1.0, f64::max);
    // Events come before the first recorded epoch when a run drops within its first epoch.
    let x_min = pruning.iter().map(|e| e.epoch).fold(1.0, f64::min).max(0.0);
    let (y_lo, y_hi) = range(series.iter().flat_map(|s| s.1.iter().copied()), 0.08);
    let x_range = if x_max > x_min {
        x_min..x_max
    } else {
        x_min - 0.5..x_max + 0.5
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x_range, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .x_labels(x.len().clamp(2, 10))
        .x_label_formatter(&|v| {
            // Epochs are whole numbers: no tick between two.
            if (v - v.round()).abs() < 1e-6 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        })
        .y_labels(8)
        .draw()?;
    for e in pruning {
        let color = if is_conversion(e) {
            CONVERSION
        } else {
            PRUNING
        };
        chart.draw_series(DashedLineSeries::new(
            [(e.epoch, y_lo), (e.epoch, y_hi)],
            5,
            4,
            color.stroke_width(if is_conversion(e) { 2 } else { 1 }),
        ))?;
    }
    for (color, ys) in series {
        let points: Vec<(f64, f64)> = x.iter().copied().zip(ys.iter().copied()).collect();
        let color = *color;
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    Ok(())
}

fn curves_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    c: &Curves,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(title, (FAMILY, 18))?;
    // The legend has its own strip above the panels, so it never covers a curve.
    let (strip, panels) = root.split_vertically(26);
    let mid = strip.dim_in_pixel().0 as i32 / 2;
    let mut legend = vec![("train", BLUE), ("test", RED)];
    if c.pruning.iter().any(|e| !is_conversion(e)) {
        legend.push(("pruning", PRUNING));
    }
    if c.pruning.iter().any(is_conversion) {
        legend.push(("conversion", CONVERSION));
    }
    let start = mid - 55 * legend.len() as i32;
    for (k, (name, color)) in legend.into_iter().enumerate() {
        let x = start + 110 * k as i32;
        strip.draw(&PathElement::new(
            vec![(x, 13), (x + 28, 13)],
            color.stroke_width(3),
        ))?;
        strip.draw(&Text::new(name, (x + 36, 5), (FAMILY, 14)))?;
    }
    let width = panels.dim_in_pixel().0;
    let (left, right) = panels.split_horizontally(width / 2);
    panel(
        &left,
        "accuracy",
        "top-1 (%)",
        &c.epoch,
        &[(BLUE, &c.train_top1), (RED, &c.test_top1)],
        &c.pruning,
    )?;
    panel(
        &right,
        "loss",
        "loss",
        &c.epoch,
        &[(BLUE, &c.train_loss), (RED, &c.test_loss)],
        &c.pruning,
    )?;
    root.present()?;
    Ok(())
}

/// `curves-<id>.{svg,png}` in `out`.
pub fn curves(out: &Path, id: &str, title: &str, c: &Curves) -> anyhow::Result<Vec<PathBuf>> {
    both(
        &out.join(format!("curves-{id}")),
        (1100, 420),
        &CurvesFigure(title, c),
    )
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Groups with a value of both metrics: (name, x, y).
fn points(groups: &[GroupRow], x: &str, x_scale: f64, y: &str) -> Vec<(String, f64, f64)> {
    groups
        .iter()
        .filter_map(|g| {
            Some((
                super::tables::name(g),
                g.stat(x).mean? * x_scale,
                g.stat(y).mean?,
            ))
        })
        .collect()
}

fn pareto_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    pts: &[(String, f64, f64)],
    y_desc: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    // The legend goes under the chart, one line per group, so it never hides a point.
    let legend_height = 30 + 22 * (pts.len() as u32 + 1);
    let height = root.dim_in_pixel().1;
    let (plot, legend) = root.split_vertically(height - legend_height);
    let (x_lo, x_hi) = range(pts.iter().map(|p| p.1), 0.1);
    let (y_lo, y_hi) = range(pts.iter().map(|p| p.2), 0.15);
    let mut chart = ChartBuilder::on(&plot)
        .caption("top-1 against FLOPs (mean over seeds)", (FAMILY, 18))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo.max(0.0)..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc("FLOPs (M multiply-adds, paper convention)")
        .y_desc(y_desc)
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;
    // The Pareto front: no other point has fewer FLOPs and a higher top-1.
    let mut front: Vec<(f64, f64)> = pts
        .iter()
        .filter(|p| {
            !pts.iter()
                .any(|q| q.1 <= p.1 && q.2 > p.2 || q.1 < p.1 && q.2 >= p.2)
        })
        .map(|p| (p.1, p.2))
        .collect();
    front.sort_by(|a, b| a.0.total_cmp(&b.0));
    front.dedup();
    let grey = BLACK.mix(0.45);
    chart.draw_series(LineSeries::new(front, grey.stroke_width(1)))?;
    // Equal points stay visible: earlier ones are drawn larger, as rings around later ones.
    let radius = |i: usize| 5 + 3 * (pts.len() - 1 - i) as i32;
    for (i, (_, x, y)) in pts.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        chart.draw_series(std::iter::once(Circle::new(
            (*x, *y),
            radius(i),
            color.filled(),
        )))?;
    }
    let x0 = 70;
    let line = |k: u32| 20 + 22 * k as i32;
    legend.draw(&PathElement::new(
        vec![(x0 - 6, line(0)), (x0 + 14, line(0))],
        grey.stroke_width(1),
    ))?;
    legend.draw(&Text::new(
        "Pareto front (no group has fewer FLOPs and a higher top-1)",
        (x0 + 24, line(0) - 8),
        (FAMILY, 13),
    ))?;
    for (i, (name, _, _)) in pts.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let y = line(i as u32 + 1);
        legend.draw(&Circle::new((x0 + 4, y), 6, color.filled()))?;
        legend.draw(&Text::new(name.as_str(), (x0 + 24, y - 8), (FAMILY, 13)))?;
    }
    root.present()?;
    Ok(())
}

/// `accuracy_vs_flops.{svg,png}`; nothing when no group has both numbers.
pub fn accuracy_vs_flops(
    out: &Path,
    groups: &[GroupRow],
    metric: Metric,
) -> anyhow::Result<Vec<PathBuf>> {
    let pts = points(groups, "flops_paper", 1e-6, metric.column());
    if pts.is_empty() {
        return Ok(Vec::new());
    }
    let y_desc = match metric {
        Metric::Final => "test top-1 (%), final epoch",
        Metric::Best => "test top-1 (%), best epoch",
    };
    let height = 480 + 30 + 22 * (pts.len() as u32 + 1);
    both(
        &out.join("accuracy_vs_flops"),
        (900, height),
        &ParetoFigure(&pts, y_desc),
    )
}

fn time_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    bars: &[(String, f64)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let longest = bars.iter().map(|b| b.0.chars().count()).max().unwrap_or(1) as u32;
    let x_max = bars.iter().map(|b| b.1).fold(0.0, f64::max) * 1.15;
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "training time per epoch (median over epochs, mean over seeds)",
            (FAMILY, 18),
        )
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(20 + 7 * longest)
        // An integer range a..b has b - a + 1 segments.
        .build_cartesian_2d(
            0.0..x_max.max(1e-3),
            (0..n.saturating_sub(1).max(1)).into_segmented(),
        )?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("seconds per epoch")
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        let color = PALETTE[i % PALETTE.len()];
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (*v, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(4, 4, 0, 0);
        bar
    }))?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
        Text::new(
            format!(" {v:.1} s"),
            (*v, SegmentValue::CenterOf(i)),
            (FAMILY, 13),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// `time_per_epoch.{svg,png}`; nothing when no group has a time.
pub fn time_per_epoch(out: &Path, groups: &[GroupRow]) -> anyhow::Result<Vec<PathBuf>> {
    let bars: Vec<(String, f64)> = groups
        .iter()
        .filter_map(|g| Some((super::tables::name(g), g.stat("epoch_seconds").mean?)))
        .collect();
    if bars.is_empty() {
        return Ok(Vec::new());
    }
    let height = 140 + 46 * bars.len() as u32;
    both(
        &out.join("time_per_epoch"),
        (1000, height),
        &TimeFigure(&bars),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blank figure.
    struct Blank;

    impl Figure for Blank {
        fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> DrawResult
        where
            DB::ErrorType: 'static,
        {
            root.fill(&WHITE)?;
            root.present()?;
            Ok(())
        }
    }

    /// A PNG that cannot be written fails as one plain line naming the file and the I/O error,
    /// and leaves no temp file (was: "Drawing backend error: ImageError(IoError(Custom {...")
    /// from plotters' own writer on a full disk).
    #[test]
    fn a_figure_that_cannot_be_written_is_one_plain_line() {
        let dir = std::env::temp_dir().join(format!("ablate-plots-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let stem = dir.join("figure");
        // The PNG's temp name is taken by a directory: its write fails as a full disk would.
        let blocked = stem.with_extension(format!("tmp-{}.png", std::process::id()));
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        let e = both(&stem, (64, 48), &Blank).unwrap_err();
        let text = format!("{e:#}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(&format!("writing {}", stem.with_extension("png").display())),
            "{text}"
        );
        assert!(
            !text.contains("Custom {") && !text.contains("IoError("),
            "{text}"
        );
        assert!(!stem.with_extension("svg").exists());
        std::fs::remove_dir_all(&blocked).unwrap();
        let drawn = both(&stem, (64, 48), &Blank).unwrap();
        assert!(drawn.iter().all(|p| p.is_file()));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
