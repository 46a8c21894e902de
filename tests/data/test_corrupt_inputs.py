"""Corrupt inputs are refused before training starts, each with one line that
says what is wrong and how to fix it (a ValueError; the trainers print it as
`error: ...` and exit 2, with no TensorFlow stack trace), or re-fetched where
that fixes them.

Cases already covered elsewhere (not repeated here): a cached archive that
fails its sha256 is deleted and downloaded again, a download with the wrong
sha256 is refused (tests/data/test_sources.py); JSON data sets with missing
keys, bad labels, invalid JSON or non-UTF-8 bytes (tests/data/test_imdb.py);
CoNLL lines with too few columns (tests/data/test_conll.py); a safetensors
file that is not one at all, a keras-hub preset of another model, a broken
`encoder.keras` (tests/checkpoints/test_bert.py).
"""

import concurrent.futures
import json
import shutil
import struct

import keras
import pytest
from helpers import FIXTURE  # tests/ is on sys.path (tests/conftest.py)
from helpers import run_script_cases

from kerapos.checkpoints import bert
from kerapos.checkpoints import language_model
from kerapos.checkpoints.bert import CheckpointError
from kerapos.data import conll
from kerapos.data import imdb
from kerapos.data import sources
from kerapos.data.byte_tokenizer import ByteTokenizer
from kerapos.models.bert_encoder import BertEncoderBackbone
from kerapos.models.causal_lm import build_causal_lm
from tests.data.test_sources import GOOD_TARBALL
from tests.data.test_sources import _cached_artifact
from tests.data.test_sources import _leftovers
from tests.data.test_sources import _npm_source
from tests.data.test_sources import _sha256
from tests.data.test_sources import cache  # noqa: F401  (a fixture)
from tests.data.test_sources import fake_npm  # noqa: F401  (a fixture)


def _one_line(error):
    message = str(error)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- archives in the data cache -------------------------------------------------


def test_truncated_cached_archive_is_fetched_again(cache, fake_npm, monkeypatch, caplog):  # noqa: F811
    artifact = _cached_artifact(monkeypatch, _npm_source(_sha256(GOOD_TARBALL)),
                                GOOD_TARBALL[: len(GOOD_TARBALL) // 2])
    directory = sources.fetch("fake", quiet=True)
    assert (directory / "data" / "hello.txt").read_bytes() == b"hello offline world\n"
    assert artifact.read_bytes() == GOOD_TARBALL
    assert "cached fake-data-1.0.0.tgz is corrupt; deleted, downloading again" in caplog.text
    assert _leftovers(cache) == []


def test_truncated_download_is_refused_by_its_sha256(cache, fake_npm, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sources.SOURCES, "fake", _npm_source(_sha256(GOOD_TARBALL)))
    fake_npm.artifact.write_bytes(GOOD_TARBALL[:-20])  # the network cut the file short
    with pytest.raises(sources.DataError, match="checksum mismatch") as raised:
        sources.fetch("fake", quiet=True)
    assert f"expected sha256 {_sha256(GOOD_TARBALL)}" in str(raised.value)
    assert not sources.artifact_path("fake").exists()
    assert not sources.is_cached("fake") and _leftovers(cache) == []


def test_truncated_cached_archive_offline_says_the_download_failed(cache, fake_npm, monkeypatch):  # noqa: F811
    _cached_artifact(monkeypatch, _npm_source(_sha256(GOOD_TARBALL)), GOOD_TARBALL[:-10])
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    with pytest.raises(sources.DataError, match="fetching 'fake' failed: .*npm pack fake-data@1.0.0"):
        sources.fetch("fake", quiet=True)
    assert not sources.artifact_path("fake").exists()  # the corrupt copy is not kept
    assert not sources.is_cached("fake")


# --- --dataset JSON files -------------------------------------------------------

_VALID = {
    "class_names": ["neg", "pos"],
    "train": [{"text": "bad", "label": 0}, {"text": "good", "label": 1}] * 5,
    "test": [{"text": "ok", "label": 1}],
}


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("train"), r"missing key\(s\) \['train'\]; expected \{\"class_names\""),
    (lambda c: c["train"].append({"text": "x", "label": 1.5}), r"train\[10\]: label 1.5 is not one"),
    (lambda c: c["train"].append({"text": "x", "label": None}), r"train\[10\]: label None is not one"),
    (lambda c: c["train"].append({"text": "x", "label": [1]}), r"train\[10\]: label \[1\] is not one"),
    (lambda c: c["test"].append({"text": 7, "label": 1}), r"test\[1\]: 'text' must be a non-empty string"),
    (lambda c: c["test"].append("just text"), r"test\[1\] must be an object with 'text' and 'label'"),
    (lambda c: c.update(class_names="neg,pos"), "class_names must list at least two distinct"),
])
def test_json_dataset_with_missing_keys_or_wrong_types(tmp_path, change, message):
    content = json.loads(json.dumps(_VALID))
    change(content)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(content), "utf-8")
    with pytest.raises(sources.DataError, match=message) as raised:
        imdb.load_classification_data(str(path))
    assert str(path) in _one_line(raised.value)


def test_json_dataset_with_a_lone_surrogate_is_refused(tmp_path):
    # Valid JSON and valid UTF-8 bytes, but "\ud800" decodes to no Unicode
    # character: TensorFlow failed later with "Error converting unicode string".
    path = tmp_path / "data.json"
    path.write_text(json.dumps(_VALID).replace('"good"', '"go\\ud800od"', 1), "utf-8")
    with pytest.raises(sources.DataError) as raised:
        imdb.load_classification_data(path)
    assert _one_line(raised.value) == (
        f"{path}: train[1]: 'text' holds '\\ud800' at character 2, a lone surrogate that is "
        "not valid Unicode; fix the \\u escape in the file")


@pytest.mark.parametrize("data, message", [
    (json.dumps(_VALID).encode()[:-30], r"not valid JSON \(line 1, column \d+: .*\); fix the syntax"),
    (b"\xff\xfe" + json.dumps(_VALID).encode("utf-16-le"), r"not valid UTF-8 \(byte 0xff at offset 0\)"),
    (json.dumps(_VALID).encode().replace(b"good", b"go\xc3od"), r"not valid UTF-8 \(byte 0xc3"),
])
def test_json_dataset_truncated_or_not_utf8(tmp_path, data, message):
    path = tmp_path / "data.json"
    path.write_bytes(data)
    with pytest.raises(sources.DataError, match=message) as raised:
        imdb.load_classification_data(path)
    assert str(path) in _one_line(raised.value)


# --- CoNLL files -------------------------------------------------------------------


def test_conll_with_ragged_columns_is_refused(tmp_path):
    # Line 3 lost its chunk column: the last column is still a tag, but of
    # another kind for some lines; reading on would train on mixed tags.
    path = tmp_path / "train.txt"
    path.write_text("EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-MISC\n\nPeter NNP B-NP B-PER\n",
                    "utf-8")
    with pytest.raises(conll.ConllError) as raised:
        conll.read_conll(path)
    assert _one_line(raised.value) == (
        f"{path} line 3: 3 column(s) in 'German JJ B-MISC', but line 1 has 4; "
        "the columns are ragged: give every token line the same columns")
    with pytest.raises(conll.ConllError, match="<lines> line 2: 3 column"):
        conll.read_conll(["a b", "c d e"])


def test_conll_with_consistent_columns_still_reads(tmp_path):
    sentences = conll.read_conll(["EU B-ORG", "rejects O", "", "-DOCSTART- -X-", "Peter B-PER"])
    assert [s.tokens for s in sentences] == [["EU", "rejects"], ["Peter"]]


# --- BERT checkpoints ----------------------------------------------------------------


def _fake_hf_checkpoint(directory, vocab_size=10, hidden=8):
    config = {"model_type": "bert", "vocab_size": vocab_size, "hidden_size": hidden,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
              "max_position_embeddings": 16, "hidden_act": "gelu"}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config), "utf-8")
    (directory / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(vocab_size)), "utf-8")
    num_bytes = 4 * vocab_size * hidden
    header = json.dumps({"bert.embeddings.word_embeddings.weight": {
        "dtype": "F32", "shape": [vocab_size, hidden], "data_offsets": [0, num_bytes]}}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(num_bytes)
    (directory / "model.safetensors").write_bytes(data)
    return len(data), 8 + len(header)


@pytest.mark.parametrize("keep", ["header only", "half the weights", "one byte short"])
def test_truncated_model_safetensors_is_refused(tmp_path, keep):
    size, header_end = _fake_hf_checkpoint(tmp_path)
    cut = {"header only": header_end, "half the weights": (size + header_end) // 2,
           "one byte short": size - 1}[keep]
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:cut])
    with pytest.raises(CheckpointError) as raised:
        bert.load_bert_checkpoint(tmp_path)
    assert _one_line(raised.value) == (
        f"{path} is not a valid safetensors file: it is truncated ({cut} bytes, its header "
        f"needs {size}); re-download the checkpoint")


def test_safetensors_cut_inside_its_header_is_refused(tmp_path):
    _, header_end = _fake_hf_checkpoint(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[: header_end - 5])
    with pytest.raises(CheckpointError, match=r"its header length \d+ exceeds the file; re-download"):
        bert.load_bert_checkpoint(tmp_path)


@pytest.fixture(scope="module")
def encoder_checkpoint(tmp_path_factory):
    keras.utils.set_random_seed(0)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"]
    encoder = BertEncoderBackbone(len(vocabulary), "learned", max_sequence_length=16,
                                  num_layers=1, hidden_dim=8, num_heads=2,
                                  intermediate_dim=16, dropout=0.0)
    return bert.save_encoder_checkpoint(tmp_path_factory.mktemp("encoder") / "ckpt",
                                        encoder, vocabulary)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """Two saved language models (t5 and alibi) and a non-LM `.keras` file."""
    root = tmp_path_factory.mktemp("lm")
    paths = {}
    for position in ("t5", "alibi"):
        config = {"vocab_size": 256, "position": position, "max_length": 24, "num_layers": 1,
                  "hidden_dim": 16, "num_heads": 2, "intermediate_dim": 32}
        paths[position] = root / f"{position}.keras"
        language_model.save_language_model(build_causal_lm(**config), paths[position], config,
                                           ByteTokenizer(), train_length=24)
    inputs = keras.Input((4,))
    paths["classifier"] = root / "classifier.keras"
    keras.Model(inputs, keras.layers.Dense(2)(inputs), name="classifier").save(paths["classifier"])
    return paths


def test_encoder_keras_of_another_model_is_refused(encoder_checkpoint, lm_files, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(encoder_checkpoint, directory)
    shutil.copy(lm_files["classifier"], directory / "encoder.keras")
    with pytest.raises(CheckpointError) as raised:
        bert.load_bert_checkpoint(directory)
    assert _one_line(raised.value) == (
        f"{directory / 'encoder.keras'} holds a Functional, not a kerapos BertEncoderBackbone")


def test_truncated_encoder_keras_is_refused(encoder_checkpoint, tmp_path):
    directory = tmp_path / "ckpt"
    shutil.copytree(encoder_checkpoint, directory)
    path = directory / "encoder.keras"
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=r"loading .*encoder.keras failed: "):
        bert.load_bert_checkpoint(directory)


# --- language models (.keras + sidecar) ----------------------------------------------


@pytest.mark.parametrize("impostor, what", [
    ("alibi", "a Functional named 'causal_lm_alibi'"),
    ("classifier", "a Functional named 'classifier'"),
])
def test_keras_file_of_another_model_is_refused(lm_files, tmp_path, impostor, what):
    path = tmp_path / "t5.keras"
    shutil.copy(lm_files[impostor], path)
    shutil.copy(lm_files["t5"].with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ValueError) as raised:
        language_model.load_language_model(path)
    assert _one_line(raised.value) == (
        f"{path} holds another model than t5.json describes (expected a causal_lm_t5 language "
        f"model; it has {what}): pass the .keras file written with that sidecar.")


def test_keras_file_of_another_size_is_refused(lm_files, tmp_path):
    path = tmp_path / "t5.keras"
    shutil.copy(lm_files["t5"], path)
    sidecar = json.loads(lm_files["t5"].with_suffix(".json").read_text())
    sidecar["build_config"]["hidden_dim"] = 32
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(ValueError, match=r"it has hidden_dim=16 \(sidecar: 32\)\): pass the .keras"):
        language_model.load_language_model(path)


def test_truncated_language_model_or_sidecar_is_refused(lm_files, tmp_path):
    path = tmp_path / "t5.keras"
    path.write_bytes(lm_files["t5"].read_bytes()[:-500])
    shutil.copy(lm_files["t5"].with_suffix(".json"), path.with_suffix(".json"))
    with pytest.raises(ValueError) as raised:
        language_model.load_language_model(path)
    assert _one_line(raised.value).startswith(f"cannot load {path} (")
    assert _one_line(raised.value).endswith("the file is truncated or not a kerapos model; "
                                            "train it again or pass another .keras file.")

    shutil.copy(lm_files["t5"], path)
    path.with_suffix(".json").write_text('{"build_config": {"position": "t5"')
    with pytest.raises(ValueError, match=r"cannot read .*t5.json as JSON \(.*\): the sidecar is corrupt"):
        language_model.load_language_model(path)
    path.with_suffix(".json").write_text('{"build_config": {}}')
    with pytest.raises(ValueError, match=r"t5.json lacks tokenizer, train_length: it was not written"):
        language_model.load_language_model(path)


# --- through the trainers: `error: ...`, exit 2, no traceback ---------------------------


def test_trainers_print_one_error_line_for_corrupt_inputs(tmp_path, lm_files):
    dataset = tmp_path / "surrogate.json"
    dataset.write_text(json.dumps(_VALID).replace('"good"', '"go\\ud800od"', 1), "utf-8")
    checkpoint = tmp_path / "truncated_ckpt"
    size, _ = _fake_hf_checkpoint(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(
        (checkpoint / "model.safetensors").read_bytes()[: size - 8])
    impostor = tmp_path / "t5.keras"
    shutil.copy(lm_files["alibi"], impostor)
    shutil.copy(lm_files["t5"].with_suffix(".json"), impostor.with_suffix(".json"))
    runs = [
        ("trainers/train_classifier.py", [
            f"--dataset={dataset}", "--max_length=16", "--vocab_size=200", "--num_layers=1",
            "--hidden_dim=16", "--num_heads=2", "--intermediate_dim=32",
            f"--model_dir={tmp_path / 'c_run'}", f"--export_dir={tmp_path / 'c_exports'}"],
         "classifier_out"),
        ("trainers/finetune_bert.py", [
            f"--checkpoint={checkpoint}", f"--dataset={FIXTURE}", "--max_length=32",
            f"--model_dir={tmp_path / 'b_run'}", f"--export_dir={tmp_path / 'b_exports'}"],
         "finetune_out"),
        ("trainers/generate.py", [f"--model_path={impostor}"], "generate_out"),
    ]
    # The three trainers' warm processes at once (each mostly imports TensorFlow).
    with concurrent.futures.ThreadPoolExecutor(len(runs)) as pool:
        classifier, finetune, generate = pool.map(
            lambda run: run_script_cases(run[0], [run[1]], tmp_path / run[2], timeout=300), runs)

    for [result], message in [
        (classifier, f"error: {dataset}: train[1]: 'text' holds '\\ud800'"),
        (finetune, f"error: {checkpoint / 'model.safetensors'} is not a valid safetensors file: "
                   "it is truncated"),
        (generate, f"error: {impostor} holds another model than t5.json describes"),
    ]:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert result.returncode == 2, result.stderr[-3000:]
        assert len(errors) == 1 and errors[0].startswith(message), result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert not (tmp_path / "c_run" / "results.json").exists()
    assert not (tmp_path / "c_exports").exists() and not (tmp_path / "b_exports").exists()
