//! One page of a view's listing: a selection narrowed by optional conditions, in the order of its
//! id column, starting after the last id of the previous page.

use sqlx::AnyPool;
use sqlx::any::AnyRow;

/// A listing's SQL under construction, with the text values its `$n` placeholders take in order.
pub(crate) struct Page<'a> {
    sql: String,
    binds: Vec<&'a str>,
}

impl<'a> Page<'a> {
    /// Starts from `select`, whose `WHERE` clause uses `$1` to `$n` for `binds`, in order.
    pub(crate) fn new(select: String, binds: Vec<&'a str>) -> Self {
        Self { sql: select, binds }
    }

    /// Narrows the selection by `condition`, which takes no value.
    pub(crate) fn and(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }

    /// Narrows the selection by the condition `condition` writes around the placeholder of
    /// `value`.
    pub(crate) fn and_with(&mut self, value: &'a str, condition: impl FnOnce(&str) -> String) {
        self.binds.push(value);
        let placeholder = format!("${}", self.binds.len());
        self.and(&condition(&placeholder));
    }

    /// Up to `limit` rows, in the order of `id_column`, after the id `after`, each read by `row`.
    pub(crate) async fn fetch<T>(
        mut self,
        pool: &AnyPool,
        id_column: &str,
        after: Option<&'a str>,
        limit: u32,
        row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, sqlx::Error> {
        if let Some(after) = after {
            self.and_with(after, |p| format!("{id_column} > {p}"));
        }
        self.sql.push_str(&format!(
            " ORDER BY {id_column} LIMIT ${}",
            self.binds.len() + 1
        ));
        let mut query = sqlx::query(&self.sql);
        for b in self.binds {
            query = query.bind(b);
        }
        query
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
            .iter()
            .map(row)
            .collect()
    }
}
