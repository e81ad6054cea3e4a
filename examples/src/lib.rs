//! Examples of rdlock.
