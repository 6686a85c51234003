//! Charts where a picture beats a table: stacked bar charts drawn as inline SVG on the
//! server (no script, no chart library), each with a text alternative and its numbers in a
//! table under a disclosure. Geometry is computed in decimals like the amounts it draws.

use maud::{Markup, html};
use rust_decimal::Decimal;

/// One bar: its label and its stacked parts (series name, value ≥ 0).
pub struct Bar {
    /// Under the bar.
    pub label: String,
    /// Parts, bottom first.
    pub parts: Vec<(String, Decimal)>,
}

impl Bar {
    fn total(&self) -> Decimal {
        self.parts.iter().map(|(_, v)| (*v).max(Decimal::ZERO)).sum()
    }
}

/// Fill colours for series, in order (distinguishable with the common colour-vision
/// deficiencies; the legend and the table carry the names). The legend's swatches are the
/// stylesheet's `.swatch.c0` … `.c7`, the same colours ([`legend_css`]).
pub const PALETTE: [&str; 8] = ["#1f5f99", "#d17a00", "#2e8540", "#b8336a", "#6a4c93", "#00838f", "#8d6e00", "#5d6d7e"];

/// The legend's stylesheet rules (no inline styles: the console's CSP allows none).
pub fn legend_css() -> String {
    let mut css = String::from(
        ".legend{list-style:none;display:flex;flex-wrap:wrap;gap:12px;padding:0;margin:2px 0}\
         .swatch{display:inline-block;width:10px;height:10px;margin-right:4px}",
    );
    for (i, c) in PALETTE.iter().enumerate() {
        css.push_str(&format!(".swatch.c{i}{{background:{c}}}"));
    }
    css
}

const WIDTH: i64 = 640;
const HEIGHT: i64 = 180;
const LEFT: i64 = 96;
const BOTTOM: i64 = 36;

/// A stacked bar chart: `title` as its caption, `summary` as its text alternative, `unit`
/// after the axis maximum.
pub fn bars(id: &str, title: &str, summary: &str, unit: &str, bars: &[Bar]) -> Markup {
    let mut series: Vec<String> = Vec::new();
    for b in bars {
        for (s, _) in &b.parts {
            if !series.contains(s) {
                series.push(s.clone());
            }
        }
    }
    let index = |s: &str| series.iter().position(|x| x == s).unwrap_or(0) % PALETTE.len();
    let colour = |s: &str| PALETTE[index(s)];
    let max = bars.iter().map(Bar::total).max().unwrap_or_default();
    let n = i64::try_from(bars.len()).unwrap_or(1).max(1);
    let slot = (WIDTH - LEFT) / n;
    let bar_w = (slot * 7 / 10).max(2);
    let px = |v: Decimal| -> i64 {
        if max.is_zero() {
            return 0;
        }
        let h = (v * Decimal::from(HEIGHT) / max).round();
        i64::try_from(h.mantissa() / 10i128.pow(h.scale())).unwrap_or(0)
    };
    html! {
        figure #(id) {
            figcaption { (title) " (" (unit) ")" }
            svg role="img" aria-label=(summary) width=(WIDTH) height=(HEIGHT + BOTTOM + 8) viewBox={ "0 0 " (WIDTH) " " (HEIGHT + BOTTOM + 8) } {
                title { (summary) }
                line x1=(LEFT) y1="4" x2=(LEFT) y2=(HEIGHT + 4) stroke="#6b7785" {}
                line x1=(LEFT) y1=(HEIGHT + 4) x2=(WIDTH) y2=(HEIGHT + 4) stroke="#6b7785" {}
                text x=(LEFT - 6) y="14" text-anchor="end" font-size="11" { (max.normalize()) }
                text x=(LEFT - 6) y=(HEIGHT + 4) text-anchor="end" font-size="11" { "0" }
                @for (i, b) in bars.iter().enumerate() {
                    @let x = LEFT + i64::try_from(i).unwrap_or(0) * slot + (slot - bar_w) / 2;
                    // Each part from the rounded running totals, so the parts add up to
                    // the bar and the tallest bar is exactly the axis.
                    @let mut sum = Decimal::ZERO;
                    @for (s, v) in &b.parts {
                        @let below = px(sum);
                        ({ sum += (*v).max(Decimal::ZERO); "" })
                        @let h = px(sum) - below;
                        @if h > 0 {
                            rect x=(x) y=(HEIGHT + 4 - below - h) width=(bar_w) height=(h) fill=(colour(s)) {
                                title { (b.label) " · " (s) ": " (v.normalize()) }
                            }
                        }
                    }
                    text x=(x + bar_w / 2) y=(HEIGHT + 18) text-anchor="middle" font-size="11" { (b.label) }
                }
            }
            @if series.len() > 1 || series.first().is_some_and(|s| !s.is_empty()) {
                ul.legend aria-hidden="true" {
                    @for s in &series {
                        li { span class={ "swatch c" (index(s)) } {} (s) }
                    }
                }
            }
            details {
                summary { "The numbers" }
                table {
                    thead { tr { th scope="col" { "" } @for s in &series { th.num scope="col" { (s) } } th.num scope="col" { "total" } } }
                    tbody {
                        @for b in bars {
                            tr {
                                th scope="row" { (b.label) }
                                @for s in &series {
                                    td.num { (b.parts.iter().filter(|(n, _)| n == s).map(|(_, v)| *v).sum::<Decimal>().normalize()) }
                                }
                                td.num { (b.total().normalize()) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    #[test]
    fn when_bars_are_drawn_should_scale_the_tallest_to_the_full_height_and_list_every_number() {
        let b = vec![
            Bar { label: "current".into(), parts: vec![("EUR".into(), dec!(1000.00))] },
            Bar { label: "1-30".into(), parts: vec![("EUR".into(), dec!(250.50))] },
            Bar { label: "90+".into(), parts: vec![("EUR".into(), dec!(0))] },
        ];
        let svg = bars("ageing", "Ageing", "Open receivables by age", "EUR", &b).into_string();
        assert!(svg.contains(&format!("height=\"{HEIGHT}\"")), "the largest bar takes the whole height: {svg}");
        assert!(svg.contains("height=\"45\""), "250.50 of 1000 is 45 of 180 pixels (rounded): {svg}");
        assert_eq!(svg.matches("<rect").count(), 2, "a zero bar draws nothing");
        assert!(svg.contains("<td class=\"num\">250.5</td>") && svg.contains("aria-label=\"Open receivables by age\""));
    }

    #[test]
    fn when_a_bar_stacks_parts_that_each_round_up_should_not_overflow_the_axis() {
        // Three thirds of the tallest bar: rounded each on its own they would make 181 px.
        let third = dec!(1) / dec!(3);
        let b = vec![Bar { label: "d".into(), parts: vec![("a".into(), third), ("b".into(), third), ("c".into(), third)] }];
        let svg = bars("x", "X", "x", "n", &b).into_string();
        let heights: i64 =
            svg.split("<rect ").skip(1).filter_map(|r| r.split("height=\"").nth(1)?.split('"').next()?.parse::<i64>().ok()).sum();
        assert_eq!(heights, HEIGHT, "{svg}");
    }
}
