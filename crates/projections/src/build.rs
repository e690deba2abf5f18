//! Every view built once, in a fresh database, from records the caller reads from any log: a
//! snapshot of the views as of a position, by the same folds, tables and registry the live
//! runtime serves.
//!
//! The caller hands over the log a page at a time, in position order, and stops where it likes;
//! memory stays bounded by the page. Each page is applied to each view in one transaction with its
//! checkpoint, exactly as a live worker applies a batch, and [`ViewBuild::finish`] marks every
//! generation serving, so the live service (or any reader of the registry) reads the snapshot as
//! it reads its own views.

use std::sync::Arc;

use custodian_domain::EventRecord;

use crate::db::ViewDb;
use crate::runtime::{
    BatchOutcome, GenerationState, Projection, Tables, apply_batch, create_registry, create_tables,
    request_rebuild,
};

/// Why a one-shot build stopped.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The database failed.
    #[error("view database: {0}")]
    Database(#[from] sqlx::Error),
    /// The database already holds views; a snapshot is only ever built into a fresh one.
    #[error("the view database already holds the {0} view; build into a fresh database")]
    NotFresh(String),
    /// The records handed over do not follow on from the last one applied.
    #[error(
        "position {expected} expected, found position {found}: the log has a gap or a duplicate"
    )]
    Gap {
        /// The position that should have come next.
        expected: u64,
        /// The position that came.
        found: u64,
    },
    /// A view could not fold an event.
    #[error("the {projection} view cannot apply position {position}: {error}")]
    Apply {
        /// The view.
        projection: String,
        /// The event's position.
        position: u64,
        /// What went wrong.
        error: String,
    },
}

/// One view's tables in a build.
#[derive(Debug, Clone)]
pub struct BuiltView {
    /// The projection's name.
    pub name: &'static str,
    /// Its bare table names (without the generation prefix).
    pub tables: &'static [&'static str],
    /// Where those tables are.
    pub generation: Tables,
}

struct View {
    projection: Arc<dyn Projection>,
    generation: i64,
    tables: Tables,
}

/// Views being built once from records the caller hands over; see the module docs.
pub struct ViewBuild {
    db: ViewDb,
    views: Vec<View>,
    position: u64,
}

impl std::fmt::Debug for ViewBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewBuild")
            .field("position", &self.position)
            .field(
                "views",
                &self
                    .views
                    .iter()
                    .map(|v| v.projection.name())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ViewBuild {
    /// Registers a first generation of each projection in `db`, which must hold none of them
    /// yet, and creates its tables, empty, at position 0.
    pub async fn start(
        db: ViewDb,
        projections: Vec<Arc<dyn Projection>>,
    ) -> Result<Self, BuildError> {
        create_registry(&db).await?;
        let mut views = Vec::with_capacity(projections.len());
        for projection in projections {
            let name = projection.name();
            let known: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM projection_generations WHERE name = $1")
                    .bind(name)
                    .fetch_one(db.pool())
                    .await?;
            if known > 0 {
                return Err(BuildError::NotFresh(name.to_owned()));
            }
            let generation = request_rebuild(&db, name, projection.version()).await?;
            create_tables(&db, &projection, generation).await?;
            views.push(View {
                tables: Tables::new(name, generation),
                projection,
                generation,
            });
        }
        Ok(Self {
            db,
            views,
            position: 0,
        })
    }

    /// The last position applied to every view (0 before the first page).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Applies `page`, which must start right after [`ViewBuild::position`] and be gapless, to
    /// every view: one transaction per view, with its checkpoint.
    pub async fn apply(&mut self, page: &[EventRecord]) -> Result<(), BuildError> {
        for (expected, record) in (self.position + 1..).zip(page) {
            if record.position != expected {
                return Err(BuildError::Gap {
                    expected,
                    found: record.position,
                });
            }
        }
        let Some(last) = page.last().map(|r| r.position) else {
            return Ok(());
        };
        for view in &self.views {
            match apply_batch(
                &self.db,
                &view.projection,
                &view.tables,
                view.generation,
                self.position,
                page,
            )
            .await
            {
                Ok(BatchOutcome::Applied(_)) => {}
                Ok(BatchOutcome::Moved(now)) => {
                    // Only a second writer on the same database moves a checkpoint.
                    return Err(BuildError::Apply {
                        projection: view.projection.name().to_owned(),
                        position: now,
                        error: "another process is writing the same views".to_owned(),
                    });
                }
                Err((position, error)) => {
                    return Err(BuildError::Apply {
                        projection: view.projection.name().to_owned(),
                        position,
                        error,
                    });
                }
            }
        }
        self.position = last;
        Ok(())
    }

    /// Marks every view's generation serving, at the position applied, and returns where each
    /// view's tables are. The database stays open for the caller (to close or to read).
    pub async fn finish(self) -> Result<Vec<BuiltView>, BuildError> {
        let mut tx = self.db.pool().begin().await?;
        for view in &self.views {
            sqlx::query(
                "UPDATE projection_generations SET state = $1 WHERE name = $2 AND generation = $3",
            )
            .bind(GenerationState::Active.as_str())
            .bind(view.projection.name())
            .bind(view.generation)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(self
            .views
            .into_iter()
            .map(|v| BuiltView {
                name: v.projection.name(),
                tables: v.projection.tables(),
                generation: v.tables,
            })
            .collect())
    }
}
