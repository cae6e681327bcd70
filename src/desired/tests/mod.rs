//! The desired readers against each other: the fast line reader and the flow reader must read
//! like the full reader or give up, nulls and aliases are refused or counted the same way in every
//! reader, and split reading equals whole reading.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

use super::{DesiredFile, SPLIT, Split, fast, parse_file_with, parse_text};

mod aliases;
mod flow;
mod generated;
mod nulls;
mod plain;
mod split;

pub(super) use generated::gen_file;
use generated::*;

const PATH: &str = "desired/test.yaml";

/// The default `max_alias_pairs`.
const CAP: usize = super::DEFAULT_MAX_ALIAS_PAIRS;
