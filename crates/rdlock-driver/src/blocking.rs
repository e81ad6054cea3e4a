//! The blocking driver (to come).
