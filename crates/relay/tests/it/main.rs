//! The relay against real `nats-server` processes and real logs.

mod outage;
mod publishing;
mod restart;
mod support;
