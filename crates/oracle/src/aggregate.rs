//! Combining the sources' values: median for numbers, mode or quorum for anything, and a minimum
//! number of sources that must agree. Never a silently wrong value: without enough agreement there
//! is no result, and the report says why.

use serde_json::Value;

use crate::request::{Aggregation, AggregationMethod};

/// What the aggregation decided.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    pub(crate) result: Option<Value>,
    /// How many sources agree with the result (or with the best candidate, when there is none).
    pub(crate) agreeing: usize,
    /// Why there is no result.
    pub(crate) error: Option<String>,
}

impl Decision {
    fn none(agreeing: usize, error: String) -> Decision {
        Decision {
            result: None,
            agreeing,
            error: Some(error),
        }
    }
}

/// `values` holds one entry per source: its extracted value, or `None` when it failed.
pub(crate) fn aggregate(a: &Aggregation, values: &[Option<Value>]) -> Decision {
    let got: Vec<&Value> = values.iter().flatten().collect();
    if got.is_empty() {
        return Decision::none(0, "no source produced a value".into());
    }
    let decision = match a.method {
        AggregationMethod::Median => median(a, &got),
        AggregationMethod::Mode => mode(&got, None),
        AggregationMethod::Quorum => mode(&got, Some(values.len())),
    };
    match decision {
        Decision {
            result: Some(_),
            agreeing,
            ..
        } if agreeing < a.min_agreeing => Decision::none(
            agreeing,
            format!(
                "{agreeing} source(s) agree; aggregation.min_agreeing is {}",
                a.min_agreeing
            ),
        ),
        d => d,
    }
}

fn median(a: &Aggregation, got: &[&Value]) -> Decision {
    let mut numbers = Vec::with_capacity(got.len());
    for v in got {
        match v.as_f64() {
            Some(n) if n.is_finite() => numbers.push(n),
            _ => {
                return Decision::none(
                    0,
                    format!("median needs numbers; a source gave {}", kind(v)),
                );
            }
        }
    }
    numbers.sort_by(f64::total_cmp);
    let n = numbers.len();
    let median = if n % 2 == 1 {
        numbers[n / 2]
    } else {
        (numbers[n / 2 - 1] + numbers[n / 2]) / 2.0
    };
    let agreeing = match a.max_deviation {
        None => n,
        Some(d) => numbers
            .iter()
            .filter(|x| (*x - median).abs() <= d * median.abs())
            .count(),
    };
    let result = serde_json::Number::from_f64(median).map(Value::Number);
    Decision {
        result,
        agreeing,
        error: None,
    }
}

/// The most common value. With `quorum_of`, it must also be a strict majority of that many
/// sources (failed ones count against it).
fn mode(got: &[&Value], quorum_of: Option<usize>) -> Decision {
    // Values compare by their canonical JSON (object keys sorted), so 1 and 1.0 differ, as they
    // differ in the report.
    let mut counts: Vec<(String, &Value, usize)> = Vec::new();
    for v in got {
        let key = crate::canonical::canonical_json(v);
        match counts.iter_mut().find(|(k, _, _)| *k == key) {
            Some(entry) => entry.2 += 1,
            None => counts.push((key, v, 1)),
        }
    }
    counts.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    let (_, value, top) = &counts[0];
    if counts.len() > 1 && counts[1].2 == *top {
        return Decision::none(
            *top,
            format!(
                "no single most common value: {} and {} are each given by {top} source(s)",
                counts[0].0, counts[1].0
            ),
        );
    }
    if let Some(total) = quorum_of
        && *top * 2 <= total
    {
        return Decision::none(
            *top,
            format!("{top} of {total} sources agree; a quorum needs more than half"),
        );
    }
    Decision {
        result: Some((*value).clone()),
        agreeing: *top,
        error: None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agg(method: AggregationMethod, min: usize, dev: Option<f64>) -> Aggregation {
        Aggregation {
            method,
            min_agreeing: min,
            max_deviation: dev,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts_and_outliers() {
        let a = agg(AggregationMethod::Median, 1, None);
        let d = aggregate(&a, &[Some(json!(3)), Some(json!(1)), Some(json!(2))]);
        assert_eq!(d.result, Some(json!(2.0)));
        let d = aggregate(
            &a,
            &[
                Some(json!(4)),
                Some(json!(1)),
                None,
                Some(json!(2)),
                Some(json!(3)),
            ],
        );
        assert_eq!((d.result, d.agreeing), (Some(json!(2.5)), 4));

        // An outlier does not move the median, and does not count as agreeing.
        let a = agg(AggregationMethod::Median, 3, Some(0.01));
        let d = aggregate(
            &a,
            &[Some(json!(100.0)), Some(json!(100.5)), Some(json!(5000))],
        );
        assert_eq!(d.result, None);
        assert_eq!(d.agreeing, 2);
        assert!(d.error.expect("why").contains("min_agreeing is 3"));
    }

    #[test]
    fn median_refuses_what_is_not_a_number() {
        let a = agg(AggregationMethod::Median, 1, None);
        let d = aggregate(&a, &[Some(json!(1)), Some(json!("2"))]);
        assert_eq!(d.result, None);
        assert!(d.error.expect("why").contains("a string"));
    }

    #[test]
    fn mode_and_quorum() {
        let a = agg(AggregationMethod::Mode, 1, None);
        let d = aggregate(
            &a,
            &[Some(json!("up")), Some(json!("down")), Some(json!("up"))],
        );
        assert_eq!((d.result, d.agreeing), (Some(json!("up")), 2));
        let d = aggregate(&a, &[Some(json!("up")), Some(json!("down"))]);
        assert!(d.result.is_none() && d.error.expect("why").contains("no single"));

        // Two of four agree: the mode, but not a quorum (failed sources count against it).
        let q = agg(AggregationMethod::Quorum, 1, None);
        let values = [Some(json!(7)), Some(json!(7)), None, Some(json!(8))];
        assert_eq!(aggregate(&a, &values).result, Some(json!(7)));
        let d = aggregate(&q, &values);
        assert!(d.result.is_none() && d.error.expect("why").contains("more than half"));
        let d = aggregate(&q, &[Some(json!(7)), Some(json!(7)), Some(json!(8))]);
        assert_eq!((d.result, d.agreeing), (Some(json!(7)), 2));
    }

    #[test]
    fn nothing_to_aggregate() {
        let a = agg(AggregationMethod::Mode, 1, None);
        let d = aggregate(&a, &[None, None]);
        assert_eq!((d.result, d.agreeing), (None, 0));
    }
}
