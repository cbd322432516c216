//! SVG plots for the report: per model × dataset, test accuracy vs density and dynamic DNR
//! vs density, one colour per host method, solid without AP and dashed with AP.
//!
//! Density is on a log axis because pruning grids are geometric (20% per round gives
//! 100%, 80%, 64%, …), so a log axis spaces the rounds evenly and shows the sparse end,
//! where methods and AP differ, as clearly as the dense end. The axis runs from dense on
//! the left to sparse on the right, like the lottery-ticket papers' "percent of weights
//! remaining" figures, so the plots read the same way as the numbers they are compared
//! with. Each point is the mean over seeds of one round, with a bar of ± one sample std
//! over seeds; the line follows the rounds. A line is a setting: a method, split by its
//! final density where a grid runs it to several ([`crate::setting`]).
//!
//! Rendering uses plotters' SVG backend without its `ttf` feature: text becomes SVG
//! `<text>` elements that the viewer lays out, so no font files are needed on the machine
//! that writes the report. The output depends only on the records, so reruns write
//! identical files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::{mean_std, SummaryRecord};
use crate::setting::setting_labels;
use crate::write_atomic;

/// Which quantity a plot shows on its y axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Final-phase test accuracy, in %.
    Accuracy,
    /// Dynamic dead neuron rate on the test set.
    DynamicDnr,
}

impl Metric {
    /// File-name prefix (`acc`, `dnr`).
    pub fn prefix(self) -> &'static str {
        match self {
            Metric::Accuracy => "acc",
            Metric::DynamicDnr => "dnr",
        }
    }

    /// Axis label.
    fn label(self) -> &'static str {
        match self {
            Metric::Accuracy => "test accuracy (%)",
            Metric::DynamicDnr => "dynamic DNR",
        }
    }

    fn value(self, r: &SummaryRecord) -> f64 {
        match self {
            Metric::Accuracy => 100.0 * r.test_accuracy,
            Metric::DynamicDnr => r.dynamic_dnr,
        }
    }
}

/// Plot size in pixels.
const SIZE: (u32, u32) = (1000, 580);

/// Width of the legend panel on the right, in pixels.
const LEGEND_WIDTH: u32 = 190;

/// Dash and gap length in pixels for AP series.
const DASH: (i32, i32) = (8, 5);

/// One colour per method (Tableau 10 plus two), as `0xRRGGBB`, by the method's position in
/// the sorted list of methods of a model × dataset, so both plots of a pair use the same
/// colours.
const COLOURS: [u32; 12] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22,
    0x17becf, 0x000000, 0x005a32,
];

/// The colour of the method at position `i` (see [`COLOURS`]).
fn colour(i: usize) -> RGBColor {
    let c = COLOURS[i % COLOURS.len()];
    RGBColor((c >> 16) as u8, (c >> 8) as u8, c as u8)
}

/// The file name of a plot, relative to the report directory: `acc-<model>-<dataset>.svg`.
/// Characters other than ASCII letters, digits, `.`, `_` and `-` become `_` so names are
/// safe as paths and as markdown link targets.
pub fn file_name(metric: Metric, model: &str, dataset: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "{}-{}-{}.svg",
        metric.prefix(),
        clean(model),
        clean(dataset)
    )
}

/// One line: a setting (a method, with its final density where it has several, see
/// [`setting_labels`]) with or without AP; points (density, mean, sample std over seeds)
/// in round order.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    method: String,
    ap: bool,
    points: Vec<(f64, f64, f64)>,
}

/// Means and sample stds over seeds per (setting, AP, round); non-finite values (a diverged
/// run's NaN) are left out so one bad seed neither breaks the axis range nor the line.
fn series(records: &[&SummaryRecord], metric: Metric) -> Vec<Series> {
    /// Per round: the seeds' densities and values.
    type Rounds = BTreeMap<usize, (Vec<f64>, Vec<f64>)>;
    let mut by: BTreeMap<(String, bool), Rounds> = BTreeMap::new();
    for (r, label) in records.iter().zip(setting_labels(records)) {
        let v = metric.value(r);
        if !(v.is_finite() && r.density.is_finite() && r.density > 0.0) {
            continue;
        }
        let e = by
            .entry((label, r.ap))
            .or_default()
            .entry(r.round)
            .or_default();
        e.0.push(r.density);
        e.1.push(v);
    }
    by.into_iter()
        .map(|((method, ap), rounds)| Series {
            method,
            ap,
            points: rounds
                .into_values()
                .map(|(d, v)| {
                    let (mean, sd) = mean_std(&v);
                    (d.iter().sum::<f64>() / d.len() as f64, mean, sd)
                })
                .collect(),
        })
        .collect()
}

/// Y range: the data plus 8% on each side; flat data (one point, or equal values) get
/// `flat` in total around the value so the line is not drawn on the frame; no data at all
/// gives 0..1.
fn padded(lo: f64, hi: f64, flat: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span < 1e-6 {
        return (lo - 0.5 * flat, hi + 0.5 * flat);
    }
    (lo - 0.08 * span, hi + 0.08 * span)
}

/// Tick label for a density: percent with as many decimals as small densities need.
fn percent(d: f64) -> String {
    let p = 100.0 * d;
    if p >= 10.0 {
        format!("{p:.0}%")
    } else if p >= 1.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.2}%")
    }
}

/// The plot's ranges: x (1 / density, log scale) with its labelled key points, and y.
struct Axes {
    x: std::ops::Range<f64>,
    key_points: Vec<f64>,
    y: std::ops::Range<f64>,
}

impl Axes {
    /// Ranges that hold every point of `series` with room around them.
    fn of(series: &[Series], metric: Metric) -> Axes {
        let all = series.iter().flat_map(|s| s.points.iter().copied());
        let (mut dmin, mut dmax, mut vmin, mut vmax) =
            (f64::INFINITY, 0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for (d, v, sd) in all {
            dmin = dmin.min(d);
            dmax = dmax.max(d);
            vmin = vmin.min(v - sd);
            vmax = vmax.max(v + sd);
        }
        if !dmin.is_finite() {
            (dmin, dmax) = (0.01, 1.0);
        }
        let flat = match metric {
            Metric::Accuracy => 1.0,
            Metric::DynamicDnr => 0.05,
        };
        let (y0, y1) = padded(vmin, vmax, flat);
        Axes {
            // A factor 1.3 of room on both sides of the log axis keeps end points off the
            // frame.
            x: to_x(dmax * 1.3)..to_x(dmin / 1.3),
            key_points: ticks(dmin, dmax).into_iter().map(to_x).collect(),
            y: y0..y1,
        }
    }
}

/// Renders one plot of `records` (one model × dataset) as SVG text.
pub fn render(records: &[&SummaryRecord], metric: Metric, caption: &str) -> Result<String> {
    let series = series(records, metric);
    let methods: Vec<&str> = {
        let mut m: Vec<&str> = series.iter().map(|s| s.method.as_str()).collect();
        m.dedup();
        m
    };
    // One colour per method, the same for its series with and without AP.
    let colours: Vec<RGBColor> = series
        .iter()
        .map(|s| {
            let i = methods.iter().position(|m| *m == s.method).unwrap_or(0);
            colour(i)
        })
        .collect();
    let axes = Axes::of(&series, metric);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        // The legend gets its own panel on the right: with up to 24 series (12 methods,
        // with and without AP) an in-plot legend would hide data wherever it sits.
        let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        draw_chart(&plot_area, &series, &colours, metric, caption, axes)?;
        draw_legend(&legend_area, &series, &colours)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// The chart: caption, axes with their labels, and each series as a line with markers
/// (dashed with AP) in its colour.
fn draw_chart(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[Series],
    colours: &[RGBColor],
    metric: Metric,
    caption: &str,
    axes: Axes,
) -> Result<()> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(axes.x.log_scale().with_key_points(axes.key_points), axes.y)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc("density: kept fraction of prunable weights (log scale, sparser to the right)")
        .y_desc(metric.label())
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .x_label_formatter(&|x| percent(1.0 / x))
        .y_label_formatter(&|v| match metric {
            Metric::Accuracy => format!("{v:.1}"),
            Metric::DynamicDnr => format!("{v:.2}"),
        })
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(draw_err)?;

    for (s, &c) in series.iter().zip(colours) {
        let style = ShapeStyle::from(&c).stroke_width(2);
        if s.ap {
            chart
                .draw_series(DashedLineSeries::new(
                    s.points.iter().map(|&(d, v, _)| (to_x(d), v)),
                    DASH.0,
                    DASH.1,
                    style,
                ))
                .map_err(draw_err)?;
        } else {
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().map(|&(d, v, _)| (to_x(d), v)),
                    style,
                ))
                .map_err(draw_err)?;
        }
        chart
            .draw_series(
                s.points
                    .iter()
                    .map(|&(d, v, _)| Circle::new((to_x(d), v), 4, marker(c, s.ap))),
            )
            .map_err(draw_err)?;
        // The seed spread: ± one sample std, where there is more than one seed.
        chart
            .draw_series(s.points.iter().filter(|p| p.2 > 0.0).map(|&(d, v, sd)| {
                ErrorBar::new_vertical(to_x(d), v - sd, v, v + sd, style.stroke_width(1), 8)
            }))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The legend panel: what solid and dashed mean, then a sample line, marker and name per
/// series.
fn draw_legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[Series],
    colours: &[RGBColor],
) -> Result<()> {
    let font = ("sans-serif", 15).into_font();
    let left = TextStyle::from(font.clone()).pos(Pos::new(HPos::Left, VPos::Center));
    area.draw(&Text::new("solid: without AP", (8, 40), left.clone()))
        .map_err(draw_err)?;
    area.draw(&Text::new("dashed: with AP", (8, 60), left.clone()))
        .map_err(draw_err)?;
    // 20 px per entry fits 24 series; more are packed closer rather than cut off.
    let step = (20).min((SIZE.1 as i32 - 100) / series.len().max(1) as i32);
    for (i, (s, &c)) in series.iter().zip(colours).enumerate() {
        let y = 92 + step * i as i32;
        let style = ShapeStyle::from(&c).stroke_width(2);
        if s.ap {
            for x0 in [8, 21, 34] {
                area.draw(&PathElement::new(vec![(x0, y), (x0 + DASH.0, y)], style))
                    .map_err(draw_err)?;
            }
        } else {
            area.draw(&PathElement::new(vec![(8, y), (42, y)], style))
                .map_err(draw_err)?;
        }
        area.draw(&Circle::new((25, y), 4, marker(c, s.ap)))
            .map_err(draw_err)?;
        let label = if s.ap {
            format!("{}+AP", s.method)
        } else {
            s.method.clone()
        };
        area.draw(&Text::new(label, (50, y), left.clone()))
            .map_err(draw_err)?;
    }
    Ok(())
}

/// The x coordinate of a density: 1 / density on a log axis, so the axis is logarithmic in
/// density and grows towards sparser networks.
fn to_x(density: f64) -> f64 {
    1.0 / density
}

/// Point markers: filled without AP, hollow with AP, so the variants differ even where
/// the lines overlap.
fn marker(c: RGBColor, ap: bool) -> ShapeStyle {
    if ap {
        ShapeStyle::from(&c).stroke_width(2)
    } else {
        c.filled()
    }
}

/// Density ticks: 1-2-5 per decade, plus 3 where a range spans under two decades (the
/// default LeNet grid spans 2.8%–100%) so the axis always has labelled ticks — the log
/// axis' own key points are only powers of ten.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = if hi / lo < 100.0 {
        &[1.0, 2.0, 3.0, 5.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = vec![];
    let mut decade = 10f64.powi(lo.log10().floor() as i32);
    while decade <= hi {
        for &m in steps {
            let t = m * decade;
            if t >= lo / 1.3 && t <= hi * 1.3 {
                out.push(t);
            }
        }
        decade *= 10.0;
    }
    out
}

/// One line of the essential-sparsity plot ([`render_sweep`]).
#[derive(Debug, Clone)]
pub struct SweepLine<'a> {
    /// Its legend entry (`unstructured`, `N:M`).
    pub label: &'a str,
    /// (sparsity %, test accuracy %), in increasing sparsity.
    pub points: &'a [(f64, f64)],
    /// Its knees: (label, sparsity %); each is drawn as a labelled dashed vertical line.
    pub knees: Vec<(String, f64)>,
}

/// The essential-sparsity plot of `ap sweep`: test accuracy (%) against sparsity (%, linear,
/// 0 to 100), one line with markers per entry of `lines` (its own colour, named in the
/// legend), and each knee of each line as a dashed vertical line in a colour of its own,
/// labelled at the top with its label and sparsity (labels one below the other, so knees
/// at the same sparsity stay readable).
pub fn render_sweep(lines: &[SweepLine], caption: &str) -> Result<String> {
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.points.iter())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), p| {
            (l.min(p.1), h.max(p.1))
        });
    let (y0, y1) = padded(lo, hi, 1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (800, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..100.0, y0..y1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("sparsity: pruned fraction of prunable weights (%), one-shot, no retraining")
            .y_desc("test accuracy (%)")
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 16))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(draw_err)?;
        for (i, line) in lines.iter().enumerate() {
            let style = ShapeStyle::from(&colour(i)).stroke_width(2);
            chart
                .draw_series(LineSeries::new(line.points.iter().copied(), style))
                .map_err(draw_err)?
                .label(line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart
                .draw_series(
                    line.points
                        .iter()
                        .map(|&p| Circle::new(p, 4, style.filled())),
                )
                .map_err(draw_err)?;
        }
        let knees = lines.iter().flat_map(|l| l.knees.iter());
        for (i, (label, x)) in knees.enumerate() {
            let x = *x;
            let c = colour(lines.len() + i);
            chart
                .draw_series(DashedLineSeries::new(
                    [(x, y0), (x, y1)],
                    DASH.0,
                    DASH.1,
                    ShapeStyle::from(&c).stroke_width(2),
                ))
                .map_err(draw_err)?;
            let top = y1 - (y1 - y0) * (0.04 + 0.06 * i as f64);
            let text = TextStyle::from(("sans-serif", 14).into_font())
                .color(&c)
                .pos(Pos::new(HPos::Right, VPos::Center));
            // Sparsities such as 12.5% keep their decimal.
            let at = (10.0 * x).round() / 10.0;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{label} {at}% "),
                    (x, top),
                    text,
                )))
                .map_err(draw_err)?;
        }
        // Lower left: the curves fall at the right, so that corner is usually empty.
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plotting failed: {e:?}")
}

/// Writes `acc-<model>-<dataset>.svg` and `dnr-<model>-<dataset>.svg` for every model ×
/// dataset in `records` into `out` (atomically); returns the written paths, sorted by model,
/// dataset, then accuracy before DNR.
pub fn write_plots(records: &[SummaryRecord], out: &Path) -> Result<Vec<PathBuf>> {
    let mut groups: BTreeMap<(&str, &str), Vec<&SummaryRecord>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.model.as_str(), r.dataset.as_str()))
            .or_default()
            .push(r);
    }
    let mut paths = vec![];
    for ((model, dataset), rs) in groups {
        for metric in [Metric::Accuracy, Metric::DynamicDnr] {
            let caption = format!(
                "{model} / {dataset}: {} vs density",
                match metric {
                    Metric::Accuracy => "test accuracy",
                    Metric::DynamicDnr => "dynamic DNR",
                }
            );
            let svg = render(&rs, metric, &caption)?;
            let path = out.join(file_name(metric, model, dataset));
            write_atomic(&path, svg.as_bytes())?;
            paths.push(path);
        }
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(method: &str, ap: bool, seed: u64, round: usize) -> SummaryRecord {
        let base = crate::report::test_record(method, ap, seed, round);
        SummaryRecord {
            test_accuracy: 0.97 + 0.001 * round as f64 + 0.002 * seed as f64,
            dynamic_dnr: 0.4 + 0.3 * base.density + if ap { -0.01 } else { 0.0 },
            static_dnr: 0.01,
            train_dynamic_dnr: 0.5,
            ..base
        }
    }

    fn grid(methods: &[&str], ap: &[bool]) -> Vec<SummaryRecord> {
        let mut v = vec![];
        for m in methods {
            for &a in ap {
                for seed in 0..2 {
                    for round in 0..8 {
                        v.push(rec(m, a, seed, round));
                    }
                }
            }
        }
        v
    }

    /// `<polyline` elements with the given RGB stroke, and how many of them have only two
    /// points (a dash).
    fn polylines(svg: &str, c: RGBColor) -> (usize, usize) {
        let stroke = format!("stroke=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        let lines: Vec<&str> = svg
            .lines()
            .filter(|l| l.contains("<polyline") && l.contains(&stroke))
            .collect();
        let dashes = lines
            .iter()
            .filter(|l| {
                l.split("points=\"")
                    .nth(1)
                    .is_some_and(|p| p.split('"').next().unwrap().split_whitespace().count() == 2)
            })
            .count();
        (lines.len(), dashes)
    }

    #[test]
    fn writes_valid_svg_with_solid_and_dashed_series() {
        let records = grid(&["imp", "gmp"], &[false, true]);
        let dir = tempfile::tempdir().unwrap();
        let paths = write_plots(&records, dir.path()).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["acc-lenet300-100-mnist.svg", "dnr-lenet300-100-mnist.svg"]
        );
        for p in &paths {
            let svg = std::fs::read_to_string(p).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
                "{svg}"
            );
            assert!(
                svg.contains("<text"),
                "axis text renders without font files"
            );
            for (i, m) in ["gmp", "imp"].iter().enumerate() {
                // Legend entries for both variants of every method.
                assert!(svg.contains(&format!("\n{m}\n</text>")), "{m}");
                assert!(svg.contains(&format!("\n{m}+AP\n</text>")), "{m}+AP");
                // Solid line (one long polyline) + legend stroke; many two-point dashes.
                let (n, dashes) = polylines(&svg, colour(i));
                assert!(
                    svg.lines().any(|l| l.contains("<polyline")
                        && l.contains(&format!("#{:06X}", COLOURS[i]))
                        && l.matches(',').count() >= 8),
                    "a solid path with all 8 points for {m}"
                );
                assert!(dashes >= 10, "{m}+AP is dashed: {dashes} of {n} polylines");
            }
            // Markers: one circle per point, 2 methods × 2 variants × 8 rounds.
            assert!(svg.matches("<circle").count() >= 32);
        }
    }

    #[test]
    fn groups_with_only_ap_off_runs_still_plot() {
        let records = grid(&["imp"], &[false]);
        let svg = render(
            &records.iter().collect::<Vec<_>>(),
            Metric::Accuracy,
            "lenet300-100 / mnist",
        )
        .unwrap();
        let (n, dashes) = polylines(&svg, colour(0));
        assert_eq!(n, 2, "the solid line and its legend sample");
        assert_eq!(
            dashes, 1,
            "no AP series: the only short stroke is the legend sample"
        );
        assert!(!svg.contains("imp+AP"));
        assert_eq!(
            svg.matches("<circle").count(),
            8 + 1 + 8,
            "8 points, the legend marker and 8 error bars (plotters marks a bar's mean with a dot)"
        );
    }

    #[test]
    fn means_over_seeds_skip_nan_and_output_is_deterministic() {
        let mut records = grid(&["imp"], &[false]);
        records[0].test_accuracy = f64::NAN; // seed 0, round 0
        let refs: Vec<&SummaryRecord> = records.iter().collect();
        let s = series(&refs, Metric::Accuracy);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].points.len(), 8);
        // Round 0 keeps only seed 1: 97.2%; round 1 is the mean of 97.1 and 97.3.
        assert!((s[0].points[0].1 - 97.2).abs() < 1e-9);
        assert!((s[0].points[1].1 - 97.2).abs() < 1e-9);
        // The seed spread: no std from one seed; sample std of 97.1 and 97.3 is 0.1·√2.
        assert_eq!(s[0].points[0].2, 0.0);
        assert!((s[0].points[1].2 - 0.1 * 2f64.sqrt()).abs() < 1e-9);
        let a = render(&refs, Metric::DynamicDnr, "c").unwrap();
        let b = render(&refs, Metric::DynamicDnr, "c").unwrap();
        assert_eq!(a, b);
        // One density only (methods that start sparse): one tick, points still drawn.
        let mut one = grid(&["rigl"], &[false, true]);
        one.retain(|r| r.round == 3);
        let svg = render(&one.iter().collect::<Vec<_>>(), Metric::Accuracy, "c").unwrap();
        assert!(svg.contains("\n50%\n</text>"), "{svg}");
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 2 + 2,
            "points, legend, bars"
        );
        // Nothing finite at all still yields a (blank) plot, not a panic.
        let empty = render(&[], Metric::Accuracy, "empty").unwrap();
        assert!(empty.contains("</svg>"));
    }

    /// Two lines, each in the legend, each knee labelled with its sparsity (12.5% keeps
    /// its decimal), one marker per point.
    #[test]
    fn sweep_plot_has_both_lines_a_legend_and_labelled_knees() {
        let un = [(0.0, 98.0), (50.0, 97.5), (90.0, 60.0)];
        let nm = [(0.0, 98.0), (12.5, 97.9), (50.0, 90.0)];
        let lines = [
            SweepLine {
                label: "unstructured",
                points: &un,
                knees: vec![("tolerance knee".into(), 50.0)],
            },
            SweepLine {
                label: "N:M",
                points: &nm,
                knees: vec![("N:M tolerance knee (7:8)".into(), 12.5)],
            },
        ];
        let svg = render_sweep(&lines, "c").unwrap();
        for needle in [
            "\nunstructured\n</text>",
            "\nN:M\n</text>",
            "tolerance knee 50% ",
            "N:M tolerance knee (7:8) 12.5% ",
        ] {
            assert!(svg.contains(needle), "{needle} missing from {svg}");
        }
        assert_eq!(svg.matches("<circle").count(), 6, "one marker per point");
        assert_eq!(svg, render_sweep(&lines, "c").unwrap());
    }

    #[test]
    fn file_names_are_safe() {
        assert_eq!(
            file_name(Metric::DynamicDnr, "resnet20-b", "cifar10"),
            "dnr-resnet20-b-cifar10.svg"
        );
        assert_eq!(file_name(Metric::Accuracy, "a/b c", "d"), "acc-a_b_c-d.svg");
    }
}
