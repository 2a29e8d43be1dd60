//! The command lines of valed, vale-ctl and pkt-gen as clap definitions, and what is
//! generated from those same definitions: man pages (`clap_mangen`) and shell
//! completions (`clap_complete`), written by `vale-ctl generate man|completions`.

pub mod vale_ctl;
pub mod valed;

use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Each binary's command and the man section its page goes in: the daemon and the
/// control tool are for administrators (8), pkt-gen for anyone (1).
pub fn programs() -> Vec<(clap::Command, &'static str)> {
    vec![
        (valed_command(), "8"),
        (vale_ctl::command(), "8"),
        (pkt_gen_command(), "1"),
    ]
}

pub fn valed_command() -> clap::Command {
    valed::Args::command()
}

pub fn pkt_gen_command() -> clap::Command {
    crate::pktgen::Options::command()
}

/// Writes a page for each binary and one for each (visible) subcommand, named
/// `vale-ctl-stats.8` and so on, into `dir`; returns their paths.
pub fn write_man_pages(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (cmd, section) in programs() {
        let mut cmd = cmd.disable_help_subcommand(true);
        // Sets each subcommand's display name to `vale-ctl-stats`, its page's title.
        cmd.build();
        write_pages(&cmd, section, dir, &mut written)?;
    }
    Ok(written)
}

fn write_pages(
    cmd: &clap::Command,
    section: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sc in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sc, section, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section(section)
        .source(format!("vale-rs {}", env!("CARGO_PKG_VERSION")))
        .manual("vale-rs");
    let path = dir.join(man.get_filename());
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    man.render_title(&mut f)?;
    man.render_name_section(&mut f)?;
    man.render_synopsis_section(&mut f)?;
    man.render_description_section(&mut f)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut f)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut f)?;
    }
    render_examples(cmd, &mut f)?;
    if cmd.get_version().is_some() {
        man.render_version_section(&mut f)?;
    }
    f.flush()?;
    written.push(path);
    Ok(())
}

/// An EXAMPLES section from the `Examples:` block each command carries in its
/// `after_help` (what `--help` shows), as literal lines; text after a blank line that
/// follows the block becomes a paragraph of its own.
fn render_examples(cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let Some(after) = cmd.get_after_help().map(|s| s.to_string()) else {
        return Ok(());
    };
    let Some(block) = after.strip_prefix("Examples:\n") else {
        return Ok(());
    };
    let (examples, rest) = block.split_once("\n\n").unwrap_or((block, ""));
    let mut roff = roff::Roff::new();
    roff.control("SH", ["EXAMPLES"]).control("nf", []);
    for line in examples.lines() {
        roff.text([roff::roman(line.trim_start())]);
    }
    roff.control("fi", []);
    if !rest.trim().is_empty() {
        roff.control("PP", []).text([roff::roman(rest.trim())]);
    }
    roff.to_writer(w)
}

/// Writes each binary's completion script for `shell` into `dir` (bash: `vale-ctl.bash`,
/// zsh: `_vale-ctl`, fish: `vale-ctl.fish`, ...); returns their paths.
pub fn write_completions(shell: clap_complete::Shell, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (mut cmd, _) in programs() {
        let name = cmd.get_name().to_string();
        let path = clap_complete::generate_to(shell, &mut cmd, name.as_str(), dir)?;
        if shell == clap_complete::Shell::Bash {
            let script = std::fs::read_to_string(&path)?;
            std::fs::write(&path, fix_bash_prefix(&script, &name))?;
        }
        written.push(path);
    }
    Ok(written)
}

/// clap_complete (4.6) names the bash case of subcommand `stats` of a hyphenated binary
/// `vale__subcmd__ctl__subcmd__stats` while the walk over the words sets
/// `vale__ctl__subcmd__stats`, so nothing after `vale-ctl SUBCOMMAND` completed; this
/// renames the cases to what the walk sets (clap-rs/clap issue 6421, open).
fn fix_bash_prefix(script: &str, bin: &str) -> String {
    const SEP: &str = "__subcmd__";
    if !bin.contains('-') {
        return script.to_string();
    }
    let wrong = format!("{}{SEP}", bin.replace('-', SEP));
    let right = format!("{}{SEP}", bin.replace('-', "__"));
    script.replace(&wrong, &right)
}
