//! Horizontal bar charts as SVG, drawn on the server from exact decimals: a bar's length is its
//! value over the largest value, in whole pixels, computed in decimal (no floats near an
//! amount). Every chart is shown beside a table with the same figures, unrounded.

use askama::Template;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::DashboardError;

/// The length of the longest bar, in pixels.
const BAR_SPACE: u32 = 360;
/// Where bars start at the least, after their labels; longer labels push them right.
const LABEL_WIDTH: u32 = 150;
/// Where bars start at the most: a longer label is cut off by the chart's edge, not the bar.
const LABEL_WIDTH_MAX: u32 = 320;
/// The width of a label's character at the chart's 12 px font, generously.
const CHAR_WIDTH: u32 = 7;
/// The height of one bar and its gap.
const ROW_HEIGHT: u32 = 24;

/// One bar: its label, its exact value and the label drawn at its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// What the bar is (a month, a country).
    pub label: String,
    /// The exact value.
    pub value: Decimal,
    /// The text drawn after the bar (the exact value, with its unit).
    pub text: String,
}

/// A chart ready to render.
#[derive(Debug, Clone, Template)]
#[template(path = "bars.svg", escape = "html")]
pub struct BarChart {
    /// The chart's accessible name.
    pub title: String,
    rows: Vec<DrawnBar>,
    height: u32,
    width: u32,
    label_width: u32,
}

#[derive(Debug, Clone)]
struct DrawnBar {
    label: String,
    text: String,
    y: u32,
    text_y: u32,
    length: u32,
    text_x: u32,
}

impl BarChart {
    /// A chart of `bars` in the order given; negative values (which the fold never leaves in a
    /// total) are drawn as empty bars.
    pub fn new(title: impl Into<String>, bars: Vec<Bar>) -> Result<BarChart, DashboardError> {
        let max = bars
            .iter()
            .map(|bar| bar.value)
            .fold(Decimal::ZERO, Decimal::max);
        let longest = bars
            .iter()
            .map(|bar| u32::try_from(bar.label.chars().count()).unwrap_or(u32::MAX))
            .max()
            .unwrap_or(0);
        let label_width = longest
            .saturating_mul(CHAR_WIDTH)
            .saturating_add(8)
            .clamp(LABEL_WIDTH, LABEL_WIDTH_MAX);
        let mut rows = Vec::with_capacity(bars.len());
        let mut y = 0u32;
        for bar in bars {
            let length = if max.is_zero() || bar.value <= Decimal::ZERO {
                0
            } else {
                let scaled = bar
                    .value
                    .checked_mul(Decimal::from(BAR_SPACE))
                    .ok_or(DashboardError::Overflow { what: "a bar" })?
                    / max;
                scaled.round().to_u32().unwrap_or(BAR_SPACE).min(BAR_SPACE)
            };
            rows.push(DrawnBar {
                label: bar.label,
                text: bar.text,
                y,
                text_y: y + 16,
                length,
                text_x: label_width + length + 6,
            });
            y += ROW_HEIGHT;
        }
        Ok(BarChart {
            title: title.into(),
            height: y.max(ROW_HEIGHT),
            width: label_width + BAR_SPACE + 200,
            label_width,
            rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar(label: &str, value: &str) -> Bar {
        Bar {
            label: label.into(),
            value: value.parse().unwrap(),
            text: value.into(),
        }
    }

    #[test]
    fn bars_are_scaled_to_the_largest_in_whole_pixels() {
        let chart = BarChart::new(
            "t",
            vec![bar("a", "258800.00"), bar("b", "64700.00"), bar("c", "0")],
        )
        .unwrap();
        let lengths: Vec<u32> = chart.rows.iter().map(|r| r.length).collect();
        assert_eq!(lengths, [360, 90, 0]);
        let svg = chart.render().unwrap();
        assert!(svg.contains(r#"width="360""#), "{svg}");
        assert!(svg.contains("258800.00"));
    }
}
