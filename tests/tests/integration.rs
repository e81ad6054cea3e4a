//! The integration cases, once per runtime enabled by a feature of this package: tests are
//! named `<runtime>::<case>`, e.g. `tokio::mutual_exclusion`.

#[cfg(feature = "tokio")]
mod tokio {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnTokio);

    #[test]
    fn a_release_that_hands_the_lock_over_yields_once() {
        rdlock_tests::yields::a_release_that_hands_the_lock_over_yields_once::<rdlock_tests::runtimes::Tokio>();
    }
}

#[cfg(feature = "async-std")]
mod async_std {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnAsyncStd);

    #[test]
    fn a_release_that_hands_the_lock_over_yields_once() {
        rdlock_tests::yields::a_release_that_hands_the_lock_over_yields_once::<rdlock_tests::runtimes::AsyncStd>();
    }
}

#[cfg(feature = "smol")]
mod smol {
    rdlock_tests::cases!(rdlock_tests::runtimes::OnSmol);

    #[test]
    fn a_release_that_hands_the_lock_over_yields_once() {
        rdlock_tests::yields::a_release_that_hands_the_lock_over_yields_once::<rdlock_tests::runtimes::Smol>();
    }
}

#[cfg(feature = "blocking")]
mod blocking {
    rdlock_tests::cases!(rdlock_tests::runtimes::Blocking);
}
