//! The pieces of the SVG charts of memory over time (`roost mem-monitor`'s and
//! `roost bench actors fleet`'s): a plot frame, round ticks, axes in MiB and seconds, a second
//! axis on the right, the budget line, series as polylines and a legend. Both charts are drawn
//! by hand as SVG text, so no plotting library is needed.

use crate::common::mib;

/// The plot area inside the margins, and the time (ms) and bytes at its right and top edges.
pub struct Frame {
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub t_max: f64,
    pub y_max: f64,
}

impl Frame {
    pub fn x(&self, t_ms: u64) -> f64 {
        self.left + t_ms as f64 / self.t_max * (self.right - self.left)
    }

    pub fn y(&self, bytes: u64) -> f64 {
        self.y_scaled(bytes as f64, self.y_max)
    }

    /// The height of `value` on an axis whose top is `max` (a second axis).
    pub fn y_scaled(&self, value: f64, max: f64) -> f64 {
        self.bottom - value / max.max(f64::MIN_POSITIVE) * (self.bottom - self.top)
    }
}

/// Round steps (1, 2 or 5 times a power of ten) from 0 to `max`, about `count` of them.
pub fn ticks(max: f64, count: f64) -> Vec<f64> {
    if max <= 0.0 {
        return vec![0.0];
    }
    let raw = max / count;
    let pow = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|f| f * pow).find(|s| *s >= raw).unwrap_or(raw);
    // Multiplying (not adding up) steps and rounding keeps labels like 0.3 exact.
    (0..).map(|i| (i as f64 * step * 1e6).round() / 1e6).take_while(|v| *v <= max * (1.0 + 1e-9)).collect()
}

/// The opening of a white `w` x `h` SVG document (close it with `</svg>\n`).
pub fn open(w: f64, h: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    )
}

/// Axes, grid, ticks labelled in MiB and s, and the axis titles.
pub fn axes(f: &Frame) -> String {
    let (l, r, t, b) = (f.left, f.right, f.top, f.bottom);
    let mut svg = format!(
        "<line x1=\"{l}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">time (s)</text>\n\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 14 {})\">memory (MiB)</text>\n",
        (l + r) / 2.0, b + 34.0, (t + b) / 2.0, (t + b) / 2.0
    );
    for v in ticks(mib(f.y_max as u64), 5.0) {
        let y = f.y((v * (1u64 << 20) as f64) as u64);
        svg += &format!(
            "<line class=\"tick\" x1=\"{}\" y1=\"{y:.1}\" x2=\"{r}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v} MiB</text>\n",
            l - 4.0,
            l - 6.0,
            y + 4.0
        );
    }
    for v in ticks(f.t_max / 1000.0, 8.0) {
        let x = f.x((v * 1000.0) as u64);
        svg += &format!(
            "<line class=\"tick\" x1=\"{x:.1}\" y1=\"{b}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"black\"/>\
             <text x=\"{x:.1}\" y=\"{}\" text-anchor=\"middle\">{v} s</text>\n",
            b + 4.0,
            b + 16.0
        );
    }
    svg
}

/// A second axis on the right edge, from 0 to `max` (plotted with [`Frame::y_scaled`]), with
/// its ticks and `title`.
pub fn right_axis(f: &Frame, max: f64, title: &str) -> String {
    let (r, t, b) = (f.right, f.top, f.bottom);
    let middle = (t + b) / 2.0;
    let title_x = r + 70.0;
    let mut svg = format!(
        "<line x1=\"{r}\" y1=\"{t}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{title_x}\" y=\"{middle}\" text-anchor=\"middle\" transform=\"rotate(90 {title_x} {middle})\">{title}</text>\n"
    );
    for v in ticks(max, 5.0) {
        let y = f.y_scaled(v, max);
        svg += &format!(
            "<line class=\"tick-right\" x1=\"{r}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"black\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"start\">{v}</text>\n",
            r + 4.0,
            r + 6.0,
            y + 4.0
        );
    }
    svg
}

/// The budget as a dashed horizontal line (none when the budget is unknown: 0).
pub fn budget_line(f: &Frame, budget: u64) -> String {
    if budget == 0 {
        return String::new();
    }
    let y = f.y(budget);
    format!(
        "<line class=\"budget\" x1=\"{}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#d62728\" stroke-dasharray=\"8 4\"/>\n",
        f.left, f.right
    )
}

/// One series as a polyline through `points` (already in SVG coordinates).
pub fn polyline(name: &str, color: &str, points: impl IntoIterator<Item = (f64, f64)>) -> String {
    let points: Vec<String> = points.into_iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    format!(
        "<polyline data-series=\"{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>\n",
        points.join(" ")
    )
}

/// A legend from (x, y) down: a coloured square and the name of each entry.
pub fn legend(x: f64, y: f64, entries: &[(&str, &str)]) -> String {
    let rows = entries.iter().enumerate().map(|(i, (name, color))| {
        let y = y + 16.0 * i as f64;
        format!(
            "<rect x=\"{x}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{y}\">{name}</text>\n",
            y - 9.0,
            x + 14.0
        )
    });
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(ticks(100.0, 5.0), [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(ticks(3.0, 8.0), [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
        assert_eq!(ticks(0.0, 5.0), [0.0]);
    }

    #[test]
    fn the_right_axis_spans_the_frame() {
        let f = Frame { left: 80.0, right: 700.0, top: 20.0, bottom: 370.0, t_max: 1000.0, y_max: 1.0 };
        assert_eq!(f.y_scaled(0.0, 500.0), 370.0);
        assert_eq!(f.y_scaled(500.0, 500.0), 20.0);
        let svg = right_axis(&f, 500.0, "awake actors");
        assert_eq!(svg.matches("class=\"tick-right\"").count(), 6, "{svg}");
        assert!(svg.contains(">500</text>") && svg.contains("awake actors"), "{svg}");
    }
}
