//! The integration cases, once per runtime enabled by a feature of this package.

#[cfg(feature = "tokio")]
mod tokio {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnTokio);
}
