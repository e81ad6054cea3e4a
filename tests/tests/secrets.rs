//! The no-secrets case, once per runtime enabled by a feature of this package: a test binary
//! of its own, since it installs the process's global tracing subscriber (at TRACE level).

macro_rules! secrets {
    ($($feature:literal => $name:ident: $harness:ty),* $(,)?) => {
        $(
            // Named `<runtime>::<case>`, as in the integration binary, so one filter picks a runtime.
            #[cfg(feature = $feature)]
            mod $name {
                #[test]
                fn no_secret_in_logs_errors_or_debug_output() {
                    let _turn = rdlock_tests::secrets::turn();
                    rdlock_tests::run_case::<$harness, _, _>(
                        "no_secret_in_logs_errors_or_debug_output",
                        rdlock_tests::secrets::no_secret_in_logs_errors_or_debug_output::<$harness>,
                    );
                }
            }
        )*
    };
}

secrets!(
    "tokio" => tokio: rdlock_tests::runtimes::OnTokio,
    "async-std" => async_std: rdlock_tests::runtimes::OnAsyncStd,
    "smol" => smol: rdlock_tests::runtimes::OnSmol,
    "blocking" => blocking: rdlock_tests::runtimes::Blocking,
);
