//! What console pages show, worked out before rendering: filters in words, the chart's
//! bars, the webhook's settings as rows.

use serde::Serialize;
use serde_json::Value;

use crate::domain::filter::EventFilter;
use crate::service::ChartPoint;

/// A webhook's event filters in words: "entityUpdated on table, topic, when tags changed,
/// unless owner:bob".
pub fn filters_in_words(filters: &[EventFilter]) -> Vec<String> {
    filters
        .iter()
        .map(|f| {
            let value = serde_json::to_value(f).unwrap_or_default();
            let list = |key: &str| -> Vec<String> {
                value[key]
                    .as_array()
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|i| i.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let entities = list("entities");
            let mut words = format!(
                "{} on {}",
                value["eventType"].as_str().unwrap_or("?"),
                if entities.iter().any(|e| e == "*") || entities.is_empty() {
                    "any entity".to_owned()
                } else {
                    entities.join(", ")
                }
            );
            let include = list("include");
            if !include.is_empty() {
                words.push_str(&format!(", when {}", include.join(" or ")));
            }
            let exclude = list("exclude");
            if !exclude.is_empty() {
                words.push_str(&format!(", unless {}", exclude.join(" or ")));
            }
            words
        })
        .collect()
}

/// One bar of the attempts chart, in the SVG's units.
#[derive(Serialize)]
pub struct Bar {
    pub x: i64,
    /// The whole bar (attempts): top and height.
    pub y: i64,
    pub height: i64,
    /// The failed part, drawn over the bottom of the bar.
    pub fail_y: i64,
    pub fail_height: i64,
    /// What the bar stands for, for its `<title>` (shown on hover, read by screen readers).
    pub label: String,
}

/// The chart's drawing area: bars of `BAR_WIDTH` with a gap, `CHART_HEIGHT` tall.
pub const CHART_HEIGHT: i64 = 100;
const BAR_WIDTH: i64 = 10;
const BAR_GAP: i64 = 2;

/// Bars for the points, scaled to the busiest one.
pub fn bars(points: &[ChartPoint]) -> (Vec<Bar>, i64) {
    let peak = points.iter().map(|p| p.attempts).max().unwrap_or(0).max(1);
    let scale = |n: i64| {
        if n == 0 {
            0
        } else {
            (n * CHART_HEIGHT / peak).max(1)
        }
    };
    let bars = points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let height = scale(p.attempts);
            let fail_height = scale(p.failures).min(height);
            Bar {
                x: i as i64 * (BAR_WIDTH + BAR_GAP),
                y: CHART_HEIGHT - height,
                height,
                fail_y: CHART_HEIGHT - fail_height,
                fail_height,
                label: format!(
                    "{}: {} attempts, {} failed",
                    crate::clock::utc(p.from),
                    p.attempts,
                    p.failures
                ),
            }
        })
        .collect();
    let width = points.len() as i64 * (BAR_WIDTH + BAR_GAP);
    (bars, width)
}

/// Indented JSON of a value.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_as_words() {
        let filters: Vec<EventFilter> = serde_json::from_value(serde_json::json!([
            {"eventType": "entityUpdated", "entities": ["table", "topic"], "include": ["tags"], "exclude": ["owner:bob"]},
            {"eventType": "entityCreated"}
        ]))
        .unwrap();
        assert_eq!(
            filters_in_words(&filters),
            [
                "entityUpdated on table, topic, when tags, unless owner:bob",
                "entityCreated on any entity"
            ]
        );
    }

    #[test]
    fn bars_scale_to_the_busiest_point() {
        let points = [
            ChartPoint {
                from: 0,
                attempts: 10,
                failures: 5,
            },
            ChartPoint {
                from: 3_600_000,
                attempts: 0,
                failures: 0,
            },
            ChartPoint {
                from: 7_200_000,
                attempts: 1,
                failures: 1,
            },
        ];
        let (bars, width) = bars(&points);
        assert_eq!(width, 36);
        assert_eq!((bars[0].height, bars[0].fail_height), (100, 50));
        assert_eq!(
            (bars[1].height, bars[2].height, bars[2].fail_height),
            (0, 10, 10)
        );
    }
}
