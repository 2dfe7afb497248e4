"""``metafab run``: the real command over a real serial port (a pseudo-terminal) to a software board.

The board here answers with the bit-exact reference model (the RTL behind
the same bytes is checked in tests/test_board_top.py); these tests check the
command itself: what it sends, that it checks every answer, its output and
its exit status, and its errors.
"""

from __future__ import annotations

import json
import os
import select
import threading

import numpy as np
import pytest

from metafab.gen.cli import main
from metafab.gen.engines.maml import initial_params
from metafab.reference import maml_fixed as mf
from metafab.reference import match_fixed as mx
from metafab.reference.config import MamlConfig, MatchConfig
from metafab.reference.payloads import maml_load_words as maml_load_payload
from metafab.reference.protocol import (
    PROTOCOL_VERSION,
    STATUS_FIELDS,
    ByteParser,
    Opcode,
    Status,
    from_words,
    header,
    to_words,
    unpack_codes,
    words_to_bytes,
)

pytest.importorskip("serial", reason="pyserial is needed for metafab run")

MAML_ARGS = ["--layers", "1-6-1", "--lanes", "2", "--k-support", "3", "--queries", "2"]
MAML_CFG = MamlConfig(layers=(1, 6, 1), k_support=3, n_query=2, lanes=2)
CLS_ARGS = ["--layers", "256-8-3", "--shots", "1", "--queries", "2", "--steps", "2", "--lanes", "2"]
MATCH_ARGS = ["--ways", "3", "--shots", "2", "--dim", "10", "--lanes", "2"]
MATCH_CFG = MatchConfig(n_way=3, k_shot=2, dim=10, lanes=2)


class SoftBoard:
    """Serves the protocol on a pty's master side, answering with the reference model."""

    def __init__(self, engine: str, cfg, *, corrupt: bool = False, silent: bool = False):
        self.engine, self.cfg, self.corrupt, self.silent = engine, cfg, corrupt, silent
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self._slave = slave  # kept open so the pty stays alive between opens
        self.loaded = None
        self.adapted = None  # the last RUN's adapted weights (READ_WEIGHTS), as LOAD words
        self.requests: list[int] = []
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        os.close(self.master)
        os.close(self._slave)

    def _serve(self):
        parser = ByteParser()
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for packet in [] if self.silent else parser.feed(data):
                status, payload = self._answer(packet[0] >> 16 & 0xFF, packet[1:])
                os.write(self.master, words_to_bytes([header(status, len(payload))] + payload))

    def _answer(self, opcode, payload):
        self.requests.append(opcode)
        cfg = self.cfg
        if opcode == Opcode.STATUS:
            return Status.OK, [7, self.runs, 0, 0, int(self.loaded is not None), PROTOCOL_VERSION]
        if opcode == Opcode.LOAD_ENCODER and self.engine == "fewshot":
            self.encoder, self.loaded = from_words(payload), None
            return Status.OK, []
        if opcode == Opcode.LOAD:
            if self.engine == "fewshot" and getattr(self, "encoder", None) is None:
                return Status.NOT_LOADED, []
            self.loaded, self.adapted = list(payload), None
            return Status.OK, []
        if opcode == Opcode.READ_WEIGHTS and self.loaded is not None and self.engine != "match":
            return Status.OK, list(self.adapted if self.adapted is not None else self.loaded)
        if opcode != Opcode.RUN or self.loaded is None:
            return Status.NOT_LOADED, []
        self.runs += 1
        if self.engine == "maml-cls":
            from metafab.reference import maml_cls_fixed as mc

            wq = self._maml_weights(from_words(self.loaded))
            x = from_words(payload)
            k, ni = cfg.k_support, cfg.n_in
            sup = x[: k * (ni + 1)].reshape(k, ni + 1)
            res = mc.run_task(wq, sup[:, :ni], sup[:, ni], x[k * (ni + 1):].reshape(-1, ni), cfg)
            words = to_words(mc.result_words(res))
            self.adapted = maml_load_payload(res.weights)
        elif self.engine == "maml":
            wq = self._maml_weights(from_words(self.loaded))
            x = from_words(payload)
            k, ni, no = cfg.k_support, cfg.n_in, cfg.n_out
            sup = x[: k * (ni + no)].reshape(k, ni + no)
            res = mf.run_task(wq, sup[:, :ni], sup[:, ni:], x[k * (ni + no):].reshape(-1, ni), cfg)
            words = to_words(res.y_query.reshape(-1))
            self.adapted = maml_load_payload(res.weights)
        elif self.engine == "fewshot":
            from metafab.reference import encoder as enc

            wq, at = [], 0
            for shape in cfg.spec.augmented_shapes():
                n = shape[0] * shape[1]
                wq.append(self.encoder[at:at + n].reshape(shape))
                at += n
            n_in = cfg.spec.n_inputs
            block = np.asarray(self.loaded, dtype=np.int64).reshape(cfg.match.n_support, -1)
            images = np.stack([unpack_codes(row[1:], 2, n_in) for row in block])
            r = enc.fewshot_fixed(wq, images, block[:, 0], unpack_codes(payload, 2, n_in)[None], cfg)
            words = to_words(mx.result_words(r.probs[0], r.pred[0]))
        else:
            rows = from_words(self.loaded).reshape(-1, cfg.dim + 1)
            prep = mx.prepare(rows[:, 1:], rows[:, 0], cfg)
            ro = mx.readout(unpack_codes(payload, cfg.query_pack, cfg.dim), prep, cfg)
            words = to_words(mx.result_words(ro.probs[0], ro.pred[0]))
        if self.corrupt:
            words[-1] ^= 1
        return Status.OK, words

    def _maml_weights(self, flat):
        out, at = [], 0
        for w in mf.quantize_params(initial_params(self.cfg, "random", 0)[0], self.cfg):
            n = np.asarray(w).size
            out.append(flat[at:at + n].reshape(np.asarray(w).shape))
            at += n
        return out


def test_run_maml_over_a_serial_port(capsys):
    with SoftBoard("maml", MAML_CFG) as board:
        code = main(["run", "maml", *MAML_ARGS, "--port", board.port, "--weights", "random", "--tasks", "2",
                     "--timeout", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert board.requests == [Opcode.LOAD, Opcode.RUN, Opcode.STATUS, Opcode.RUN, Opcode.STATUS, Opcode.STATUS]
    wq = mf.quantize_params(initial_params(MAML_CFG, "random", 0)[0], MAML_CFG)
    assert board.loaded == maml_load_payload(wq)
    assert [r["mismatches"] for r in out["results"]] == [0, 0]
    assert out["end_to_end_us"]["runs"] == 2 and 0 < out["end_to_end_us"]["min"] <= out["end_to_end_us"]["median"]
    assert len(out["results"][0]["outputs"]) == MAML_CFG.n_query * MAML_CFG.n_out
    assert out["status"] == dict(zip(STATUS_FIELDS, [7, 2, 0, 0, 1, PROTOCOL_VERSION], strict=True))


def test_run_maml_cls_sends_glyph_episodes_and_checks_every_word(capsys):
    from metafab.gen.engines.maml_cls import glyph_episodes
    from metafab.reference.config import MamlClsConfig
    from metafab.reference.payloads import maml_cls_run_words

    cfg = MamlClsConfig(layers=(256, 8, 3), k_support=3, n_query=6, steps=2, lanes=2)
    with SoftBoard("maml-cls", cfg) as board:
        code = main(["run", "maml-cls", *CLS_ARGS, "--port", board.port, "--weights", "random", "--episodes", "2",
                     "--timeout", "5", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["mismatches"] == 0
    assert board.requests[:3] == [Opcode.LOAD, Opcode.RUN, Opcode.STATUS]
    _, items = glyph_episodes(cfg, 2, 0)
    assert [len(r["classes"]) for r in out["results"]] == [6, 6]
    assert len(maml_cls_run_words(*items[0])) == cfg.run_words


def test_run_match_loads_each_episode_and_checks_every_query(capsys):
    with SoftBoard("match", MATCH_CFG) as board:
        code = main(["run", "match", *MATCH_ARGS, "--port", board.port, "--episodes", "2", "--timeout", "5"])
    out = capsys.readouterr().out
    assert code == 0
    assert board.requests.count(Opcode.LOAD) == 2 and board.requests.count(Opcode.RUN) == 2 * MATCH_CFG.n_way
    assert len(board.loaded) == MATCH_CFG.n_way * MATCH_CFG.k_shot * (MATCH_CFG.dim + 1)
    assert "episode 1 query 2: class" in out and "mismatches 0" in out and "accuracy" in out


def test_run_fewshot_sends_the_encoder_then_glyph_episodes(capsys):
    from metafab.reference.encoder import EncoderConfig

    cfg = EncoderConfig(spec="d12-d8", lanes=4, split=1, n_way=3)
    args = ["--spec", "d12-d8", "--lanes", "4", "--split", "1", "--ways", "3"]
    with SoftBoard("fewshot", cfg) as board:
        code = main(["run", "fewshot", *args, "--port", board.port, "--episodes", "2", "--timeout", "5", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert board.requests[0] == Opcode.LOAD_ENCODER and board.requests.count(Opcode.LOAD) == 2
    assert code == 0 and out["mismatches"] == 0 and len(out["results"]) == 6
    assert out["encoder"].startswith("random He weights")
    with SoftBoard("fewshot", cfg) as board:  # --skip-encoder-load: a board without an encoder says NOT_LOADED
        assert main(["run", "fewshot", *args, "--port", board.port, "--skip-encoder-load", "--timeout", "5"]) == 2
    assert "NOT_LOADED" in capsys.readouterr().err


def test_run_reports_wrong_answers(capsys):
    with SoftBoard("match", MATCH_CFG, corrupt=True) as board:
        code = main(["run", "match", *MATCH_ARGS, "--port", board.port, "--episodes", "1", "--timeout", "5",
                     "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["mismatches"] == MATCH_CFG.n_way
    with SoftBoard("maml", MAML_CFG, corrupt=True) as board:
        code = main(["run", "maml", *MAML_ARGS, "--port", board.port, "--weights", "random", "--tasks", "1",
                     "--timeout", "5"])
    assert code == 1 and "1 mismatches" in capsys.readouterr().out


def test_run_errors_are_one_line(tmp_path, capsys):
    assert main(["run", "maml", "--port", str(tmp_path / "no-such-port")]) == 2
    err = capsys.readouterr().err
    assert "cannot open serial port" in err and "Traceback" not in err
    bad = tmp_path / "eps.json"
    bad.write_text(json.dumps([{"support": [[0.0] * 10] * 6, "labels": [0, 1, 2, 0, 1, 7], "queries": [[0] * 10]}]))
    with SoftBoard("match", MATCH_CFG) as board:
        assert main(["run", "match", *MATCH_ARGS, "--port", board.port, "--input", str(bad)]) == 2
    assert "labels must be class labels 0..2" in capsys.readouterr().err
    with SoftBoard("match", MATCH_CFG, silent=True) as board:  # a board that never answers
        assert main(["run", "match", *MATCH_ARGS, "--port", board.port, "--timeout", "0.3"]) == 2
    assert "no complete response" in capsys.readouterr().err


def test_run_reads_the_adapted_weights_back_and_the_api_board_backend(capsys):
    """``run --read-weights`` checks READ_WEIGHTS after each task; the Python API's Board backend gives what
    the reference backend gives (outputs and adapted weights) over the same serial protocol."""
    from metafab.api import MAML, Board, Design

    with SoftBoard("maml", MAML_CFG) as board:
        code = main(["run", "maml", *MAML_ARGS, "--port", board.port, "--weights", "random", "--tasks", "2",
                     "--timeout", "5", "--read-weights", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and board.requests.count(Opcode.READ_WEIGHTS) == 2
    assert [(r["weight_words"], r["weight_mismatches"]) for r in out["results"]] == [(MAML_CFG.n_params, 0)] * 2
    fields = {k: v for k, v in MAML_CFG.to_dict().items() if k in ("layers", "k_support", "n_query", "lanes", "steps")}
    design = Design("maml", weights="random", **fields)
    rng = np.random.default_rng(3)
    xs, ys = rng.uniform(-1, 1, (MAML_CFG.k_support, 1)), rng.uniform(-1, 1, (MAML_CFG.k_support, 1))
    xq = rng.uniform(-1, 1, (MAML_CFG.n_query + 1, 1))  # one more than a RUN holds: two runs
    ref = MAML(design).clone().adapt(xs, ys)
    with SoftBoard("maml", MAML_CFG) as board:
        task = MAML(design, backend=Board(board.port, timeout=5)).clone().adapt(xs, ys)
        np.testing.assert_array_equal(task(xq), ref(xq))
        assert all((a == b).all() for a, b in zip(task.parameter_codes(), ref.parameter_codes(), strict=True))
    assert board.requests.count(Opcode.LOAD) == 1 and board.requests.count(Opcode.READ_WEIGHTS) == 2


def test_the_api_fewshot_board_backend_equals_the_reference():
    """``metafab.api.FewShot`` on a Board: LOAD_ENCODER once, a LOAD per support set, a RUN per query image;
    the answers are the reference backend's."""
    from metafab.api import Board, Design, FewShot
    from metafab.reference import glyphs
    from metafab.reference.encoder import EncoderConfig

    design = Design("fewshot", spec="d12-d8", lanes=4, split=1, n_way=3)
    assert design.config == EncoderConfig(spec="d12-d8", lanes=4, split=1, n_way=3)
    ep = glyphs.EpisodeSampler(split="test", n_way=3, k_shot=1, n_query=2).sample(np.random.default_rng(4))
    want = FewShot(design).support(ep.support, ep.support_labels).classify(ep.query)
    with SoftBoard("fewshot", design.config) as board:
        learner = FewShot(design, backend=Board(board.port, timeout=5))
        got = learner.support(ep.support, ep.support_labels).classify(ep.query)
        again = learner.support(ep.support[::-1], ep.support_labels[::-1]).classify(ep.query[:2])
        assert board.requests.count(Opcode.LOAD_ENCODER) == 1 and board.requests.count(Opcode.LOAD) == 2
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert np.array_equal(again[1], FewShot(design).support(ep.support[::-1], ep.support_labels[::-1])
                          .classify(ep.query[:2])[1])
