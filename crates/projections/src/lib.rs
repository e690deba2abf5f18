//! Read models folded from the log: each projection is a named, versioned fold of events, in
//! position order, into SQL views.
//!
//! Architecture invariant: a projection reads only the log. Its checkpoint is written in the same
//! transaction as the rows it changed, so a crash never applies an event twice or skips one.
//!
//! Nothing is projected yet: the runtime arrives with the first views.
