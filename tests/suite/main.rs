//! The drp test suite: every test drives the real binaries against real
//! services (PostgreSQL, MariaDB, Garage S3, OpenSSH SFTP) started by
//! tests/run.sh on loopback.

mod handover;
mod harness;
mod receivers;
mod redis;
mod redis_drill;
mod reliability;

mod ansible;
mod archiving;
mod binlog;
mod catalogue;
mod cli;
mod command_source;
mod coordinator_watch;
mod docs;
mod drill_schedule;
mod drills;
mod examples;
mod failover;
mod faults;
mod fencing;
mod fleet;
mod hooks;
mod incremental;
mod injection;
mod lvm;
mod mariadb_points;
mod monitoring;
mod music_library;
mod packaging;
mod policy;
mod production;
mod proving;
mod roundtrip;
mod sealed;
mod snapshots;
mod standby;
mod standby_status;
mod streaming;
mod trust;
mod verdicts;
mod watchdog;
