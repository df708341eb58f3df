"""The study tab's endpoints in-process through gradio_client (/ab_next, /ab_vote, /ab_results)."""

from __future__ import annotations

import socket

import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from studio.study.service import StudyService  # noqa: E402
from studio.ui.study_tab import build_standalone_app  # noqa: E402


def test_api_deals_blind_pairs_and_votes_idempotently(data_dir, spec, monkeypatch):
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    from studio.study.media import generate_synthetic

    service = StudyService(data_dir=data_dir, generate=generate_synthetic, app_version="test")
    service.create_study(spec(attention_rate=0.0))
    service.start_pregeneration("s1").join(timeout=300)
    demo = build_standalone_app(service)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                allowed_paths=[str(service.data_dir)])
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", download_files=False, verbose=False)
        battle = client.predict("s1", "api:tester", api_name="/ab_next")
        assert not battle["done"] and "baseline" not in str(battle) and "tuned" not in str(battle)
        receipt = client.predict(battle["battle_id"], "api:tester", "left", "", "both_bad", api_name="/ab_vote")
        assert receipt["recorded"] and {receipt["left_system"], receipt["right_system"]} == {"baseline", "tuned"}
        again = client.predict(battle["battle_id"], "api:tester", "right", api_name="/ab_vote")
        assert not again["recorded"] and again["answers"]["overall"] == "left"
        with pytest.raises(Exception, match="another evaluator"):
            client.predict(battle["battle_id"], "api:someone-else", "left", api_name="/ab_vote")
        with pytest.raises(Exception, match="reserved"):
            client.predict("s1", "hf:impostor", api_name="/ab_next")
        results = client.predict("s1", False, api_name="/ab_results")
        overall = next(r for r in results["pairwise"] if r["criterion"] == "overall")
        assert results["n_votes"] == 1 and overall["n_votes"] == 1
    finally:
        demo.close()
