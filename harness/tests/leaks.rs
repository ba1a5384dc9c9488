//! The short form of the bench's leak check, in the test suite: consecutive failovers
//! through the manager against mock processes must leave the manager's open files, child
//! processes and mounts exactly where they were (memory is reported by `harness bench`,
//! where a number is read by a person, not judged by a threshold).

#[test]
fn two_hundred_failovers_leak_no_fd_process_or_mount() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mock = testkit::bin_exe!("harness");
    let result = runtime.block_on(harness::bench::leak_check(&mock, 200)).unwrap();
    assert_eq!(result["fds"][0], result["fds"][1], "open files grew: {result}");
    assert_eq!(result["child_processes"][0], result["child_processes"][1], "child processes grew: {result}");
    assert_eq!(result["mounts_under_root_after"], 0, "mounts left: {result}");
}
