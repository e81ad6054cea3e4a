//! Integration tests of rdlock against real redis-server processes.
