//! Numbered placeholders for multi-row statements: the writer's batches, the outbox's event
//! rows. Written once so every multi-row statement numbers its parameters the same way.

/// `($first, …), (…), …`: `rows` rows of `width` parameters each, for a `VALUES` list.
pub(crate) fn value_rows(first: usize, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|row| {
            let params = (0..width)
                .map(|col| format!("${}", first + row * width + col))
                .collect::<Vec<_>>()
                .join(", ");
            format!("({params})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::value_rows;

    #[test]
    fn rows_number_their_parameters_from_the_first() {
        assert_eq!(value_rows(3, 2, 2), "($3, $4), ($5, $6)");
        assert_eq!(value_rows(1, 1, 3), "($1, $2, $3)");
    }
}
