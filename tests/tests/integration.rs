//! The integration cases, once per runtime enabled by a feature of this package: tests are
//! named `<runtime>::<case>`, e.g. `tokio::mutual_exclusion`.

#[cfg(feature = "tokio")]
mod tokio {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnTokio);
}

#[cfg(feature = "async-std")]
mod async_std {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnAsyncStd);
}

#[cfg(feature = "smol")]
mod smol {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnSmol);
}

#[cfg(feature = "blocking")]
mod blocking {
    rdlock_tests::cases!(rdlock_tests::runtimes::Blocking);
}
