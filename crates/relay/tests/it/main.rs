//! The relay against real `nats-server` processes and real logs.

mod checkpoints;
mod outage;
mod publishing;
mod restart;
mod support;
