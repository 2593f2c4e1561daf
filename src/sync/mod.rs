//! Pure sync logic, without actix or diesel: what to ask relays for and when a window is
//! complete. The relay actor executes these decisions.

pub mod closed;
pub mod cursor;
pub mod filter;
pub mod live;
pub mod negentropy;
pub mod plan;
