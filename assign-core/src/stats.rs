//! The median, one definition for every crate: the leader (the group's median capacity), the
//! agent (its peers' median lag), the simulator's tables and the benchmarks. With an even count
//! it is the mean of the two middle values, so a group of two members has a median between
//! them, not the larger one.

/// Median of values already sorted ascending; `None` when there are none.
pub fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Smallest, median and largest of `values` (any order; ordered by `f64::total_cmp`, so a NaN
/// counts as the largest); `None` when there are none.
pub fn min_median_max(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let median = median_of_sorted(&sorted)?;
    Some((sorted[0], median, sorted[sorted.len() - 1]))
}

/// Median of `values` in any order; `None` when there are none.
pub fn median(values: &[f64]) -> Option<f64> {
    min_median_max(values).map(|(_, median, _)| median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_count_is_the_middle_value() {
        assert_eq!(median(&[5.0, 1.0, 3.0]), Some(3.0));
        assert_eq!(median_of_sorted(&[1.0, 3.0, 5.0]), Some(3.0));
    }

    #[test]
    fn even_count_is_the_mean_of_the_two_middle_values() {
        assert_eq!(median(&[4.0, 1.0, 2.0, 10.0]), Some(3.0));
        assert_eq!(median(&[100.0, 200.0]), Some(150.0));
    }

    #[test]
    fn nothing_has_no_median() {
        assert_eq!(median(&[]), None);
        assert_eq!(median_of_sorted(&[]), None);
        assert_eq!(min_median_max(&[]), None);
    }

    #[test]
    fn min_median_max_ignores_input_order() {
        assert_eq!(
            min_median_max(&[7.0, -1.0, 3.0, 2.0]),
            Some((-1.0, 2.5, 7.0))
        );
        assert_eq!(min_median_max(&[4.0]), Some((4.0, 4.0, 4.0)));
    }
}
