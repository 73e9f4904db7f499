"""Google Cloud Speech (issue 16): the real ``google-cloud-speech`` client against a fake v1
Speech server on 127.0.0.1 (tests/fakes/google_speech.py, grpcio): the request it gets
(LINEAR16 16 kHz mono converted from WebM/Opus and MP3, language, hints, punctuation,
diarization), the scripted answers mapped to our Transcript (batch) and Hypotheses
(streaming, in order), gRPC errors and a hanging server as clear provider errors; then the
hub: ``/v1/audio/transcriptions`` and voice messages backed by Google."""

from __future__ import annotations

import time

import grpc
import numpy as np
import openai
import pytest

pytest.importorskip("google.cloud.speech_v1")
pytest.importorskip("av")

from google.cloud import speech_v1

from lydian_plugins.speech.audio import decode
from lydian_plugins.speech.errors import BadAudio, ProviderFailed, ProviderUnavailable, TooLong
from lydian_plugins.speech.google import CHUNK_BYTES, GoogleSpeech, pcm16
from lydian_plugins.speech.plugin import result_of
from tests.fakes.google_speech import FakeGoogleSpeech, GScript, result, streamed, word
from tests.speech_support import SENTENCES, convert, have, pcm_wav, speak

pytestmark = pytest.mark.skipif(not have("espeak-ng"), reason="espeak-ng not installed")


def google(fake: FakeGoogleSpeech, **options) -> GoogleSpeech:
    return GoogleSpeech(endpoint=fake.endpoint, insecure=True, timeout=20.0, **options)


def dbfs(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return 20 * np.log10(np.sqrt(np.mean(samples**2)))


TWO_RESULTS = [
    result(
        "Please send the report.",
        [
            word("Please", 0.3, 0.6),
            word("send", 0.6, 0.9),
            word("the", 0.9, 1.0),
            word("report.", 1.0, 1.6),
        ],
        confidence=0.92,
        end=1.8,
    ),
    result(
        "To the finance team.",
        [
            word("To", 2.0, 2.2),
            word("the", 2.2, 2.3),
            word("finance", 2.3, 2.8),
            word("team.", 2.8, 3.2),
        ],
        confidence=0.8,
        end=3.4,
        language="en-us",
    ),
]


@pytest.mark.parametrize("fmt", ["webm", "mp3"])
def test_batch_sends_linear16_and_maps_the_answer(fmt):
    wav = speak(SENTENCES[0])
    source = decode(wav, max_seconds=60)
    with FakeGoogleSpeech(GScript(results=TWO_RESULTS)) as fake:
        provider = google(
            fake, alternative_languages=["de-DE", "fr-FR"], model="latest_long", punctuation=True
        )
        transcript = provider.transcribe(convert(wav, fmt), filename=f"voice.{fmt}")

        (call,) = fake.calls
        assert call.method == "Recognize"
        config = call.config
        assert config.encoding == speech_v1.RecognitionConfig.AudioEncoding.LINEAR16
        assert config.sample_rate_hertz == 16000 and config.audio_channel_count == 1
        assert config.language_code == "en-US"
        assert list(config.alternative_language_codes) == ["de-DE", "fr-FR"]
        assert config.enable_automatic_punctuation and config.enable_word_time_offsets
        assert config.model == "latest_long"
        assert not config.diarization_config.enable_speaker_diarization
        # the audio itself: the sentence, decoded from the lossy container, as 16-bit PCM
        seconds = len(call.audio) / 32000
        assert abs(seconds - source.duration) < 0.2, (seconds, source.duration)
        assert abs(dbfs(call.audio) - dbfs(pcm16(source))) < 3

    assert transcript.text == "Please send the report. To the finance team."
    assert transcript.language == "en-us" and transcript.provider == "google"
    assert transcript.model == "latest_long"
    assert abs(transcript.duration - source.duration) < 0.2
    first, second = transcript.segments
    assert (first.start, first.end, first.confidence) == (0.3, 1.8, 0.92)
    assert (second.start, second.end, second.confidence) == (2.0, 3.4, 0.8)
    assert first.speaker is None and second.speaker is None
    # duration-weighted: 1.5 s at 0.92, 1.4 s at 0.8
    assert transcript.confidence == pytest.approx((1.5 * 0.92 + 1.4 * 0.8) / 2.9)
    handled = result_of(transcript, "voice.webm")
    assert handled.data["speakers"] == [] and handled.markdown == transcript.text


def test_diarization_gives_speaker_turns():
    """Google's diarization answer: the final results, then a last result that repeats every
    word with its speaker tag. Our segments are the speaker turns."""
    words = [("Hello", 0.2, 0.5, 1), ("there.", 0.5, 0.9, 1), ("How", 1.4, 1.6, 2)]
    words += [("are", 1.6, 1.7, 2), ("you?", 1.7, 2.1, 2), ("Fine.", 2.5, 2.9, 1)]
    script = GScript(
        results=[
            result("Hello there.", confidence=0.9, end=1.0),
            result("How are you? Fine.", confidence=0.7, end=3.0),
            result("", [word(*w) for w in words], end=3.0),
        ]
    )
    wav = speak(SENTENCES[1])
    with FakeGoogleSpeech(script) as fake:
        provider = google(fake, diarization=True, min_speakers=2, max_speakers=3)
        transcript = provider.transcribe(convert(wav, "webm"))
        diarization = fake.calls[0].config.diarization_config
        assert diarization.enable_speaker_diarization
        assert (diarization.min_speaker_count, diarization.max_speaker_count) == (2, 3)

    assert transcript.text == "Hello there. How are you? Fine."
    turns = [(s.speaker, s.text, s.start, s.end) for s in transcript.segments]
    assert turns == [
        ("1", "Hello there.", 0.2, 0.9),
        ("2", "How are you?", 1.4, 2.1),
        ("1", "Fine.", 2.5, 2.9),
    ]
    assert transcript.segments[0].confidence == 0.8  # the results' mean, when none is given
    handled = result_of(transcript, "talk.webm")
    assert handled.data["speakers"] == ["1", "2"]
    assert handled.markdown.splitlines() == [
        "Speaker 1: Hello there.",
        "Speaker 2: How are you?",
        "Speaker 1: Fine.",
    ]
    assert "2 speakers" in handled.summary
    (chunk,) = handled.data["chunks"]  # what the assistant reads: who said what
    assert chunk["text"] == "Speaker 1: Hello there. Speaker 2: How are you? Speaker 1: Fine."


def test_streaming_gives_interim_then_final_results_in_order():
    pcm = pcm16(decode(speak(SENTENCES[2]), max_seconds=60))
    script = GScript(
        stream=[
            [streamed("can you", final=False, stability=0.3)],
            [streamed("can you restart", final=False, stability=0.6)],
            [
                streamed(
                    "Can you restart the database?",
                    [word("Can", 0.2, 0.4), word("database?", 1.2, 1.9)],
                    final=True,
                    confidence=0.88,
                    end=2.0,
                )
            ],
            [streamed("after the", final=False, stability=0.2)],
            [streamed("After the backup.", final=True, confidence=0.75, end=3.1, language="en-gb")],
        ]
    )
    chunks = [pcm[i : i + 3200] for i in range(0, len(pcm), 3200)]  # 100 ms each
    with FakeGoogleSpeech(script) as fake:
        provider = google(fake, alternative_languages=["en-GB"])
        got = list(provider.stream(iter(chunks), language="en-US"))
        (call,) = fake.calls
        assert call.method == "StreamingRecognize"
        assert call.config.interim_results and call.config.config.language_code == "en-US"
        assert list(call.config.config.alternative_language_codes) == ["en-GB"]
        assert call.audio == pcm and call.chunks == len(chunks)

    assert [(h.final, h.text) for h in got] == [
        (False, "can you"),
        (False, "can you restart"),
        (True, "Can you restart the database?"),
        (False, "after the"),
        (True, "After the backup."),
    ]
    assert [h.stability for h in got] == [0.3, 0.6, None, 0.2, None]
    assert (got[2].start, got[2].end, got[2].confidence) == (0.2, 2.0, 0.88)
    assert (got[4].start, got[4].end, got[4].language) == (2.0, 3.1, "en-gb")


def test_audio_over_a_minute_is_streamed_and_over_five_minutes_refused():
    tone = 0.3 * np.sin(np.arange(16000 * 70) * 2 * np.pi * 220 / 16000)
    script = GScript(
        stream=[
            [streamed("first minute", final=False, stability=0.5)],
            [streamed("First minute.", final=True, confidence=0.9, end=60.0)],
            [streamed("And the rest.", final=True, confidence=0.7, end=70.0)],
        ]
    )
    with FakeGoogleSpeech(script) as fake:
        transcript = google(fake).transcribe(pcm_wav(tone))
        (call,) = fake.calls
        assert call.method == "StreamingRecognize" and not call.config.interim_results
        assert len(call.audio) == 16000 * 70 * 2
        assert call.chunks == -(-len(call.audio) // CHUNK_BYTES)
        with pytest.raises(TooLong, match="the limit is 5:00"):
            google(fake).transcribe(pcm_wav(np.zeros(8000 * 301), rate=8000))
        assert len(fake.calls) == 1  # refused before any call
    assert transcript.text == "First minute. And the rest."
    assert [(s.start, s.end) for s in transcript.segments] == [(0.0, 60.0), (60.0, 70.0)]


def test_silence_and_bad_audio_never_reach_google():
    with FakeGoogleSpeech() as fake:
        quiet = google(fake).transcribe(pcm_wav(np.zeros(32000)))
        assert quiet.silent and quiet.text == "" and quiet.duration == 2.0
        with pytest.raises(BadAudio, match="not a decodable audio file"):
            google(fake).transcribe(b"this is not audio at all", filename="x.mp3")
        assert fake.calls == []


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            BadAudio,
            "Google Speech refused the request: bad sample rate",
        ),
        (grpc.StatusCode.UNAVAILABLE, ProviderFailed, "Google Speech is unavailable at 127.0.0.1:"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, ProviderFailed, "did not answer within 20 s"),
        (grpc.StatusCode.PERMISSION_DENIED, ProviderFailed, "refused the credentials: no"),
    ],
)
def test_server_errors_become_clear_provider_errors(status, error, message):
    wav = speak(SENTENCES[3])
    with FakeGoogleSpeech(
        GScript(error=(status, "bad sample rate" if "rate" in message else "no"))
    ) as fake:
        provider = google(fake)
        with pytest.raises(error) as batch:
            provider.transcribe(wav)
        assert message in str(batch.value)
        with pytest.raises(error) as streaming:
            list(provider.stream([pcm16(decode(wav, max_seconds=60))]))
        assert message in str(streaming.value)
        assert [c.method for c in fake.calls] == ["Recognize", "StreamingRecognize"]


def test_nobody_listening_is_unavailable():
    with FakeGoogleSpeech() as fake:
        endpoint = fake.endpoint
    provider = GoogleSpeech(endpoint=endpoint, insecure=True, timeout=20.0)
    with pytest.raises(ProviderFailed, match=f"unavailable at {endpoint}"):
        provider.transcribe(speak(SENTENCES[3]))


def test_a_hanging_server_times_out():
    wav = speak(SENTENCES[4])
    with FakeGoogleSpeech(GScript(hang=True)) as fake:
        provider = GoogleSpeech(endpoint=fake.endpoint, insecure=True, timeout=1.5)
        started = time.monotonic()
        with pytest.raises(ProviderFailed, match=r"did not answer within 1\.5 s"):
            provider.transcribe(wav)
        with pytest.raises(ProviderFailed, match=r"did not answer within 1\.5 s"):
            list(provider.stream([pcm16(decode(wav, max_seconds=60))]))
        assert time.monotonic() - started < 25  # two timeouts, not the fake's 30-s hang
        assert [c.method for c in fake.calls] == ["Recognize", "StreamingRecognize"]


def test_the_fake_refuses_what_google_refuses():
    """Its checks bite (so the tests above prove what we send): FLAC at 4 kHz, a minute
    and more through Recognize."""
    with FakeGoogleSpeech(GScript(results=TWO_RESULTS)) as fake:
        channel = grpc.insecure_channel(fake.endpoint)
        transport = speech_v1.services.speech.transports.SpeechGrpcTransport(
            host=fake.endpoint, channel=channel
        )
        client = speech_v1.SpeechClient(transport=transport)
        Encoding = speech_v1.RecognitionConfig.AudioEncoding
        bad = speech_v1.RecognitionConfig(
            encoding=Encoding.FLAC, sample_rate_hertz=16000, language_code="en-US"
        )
        with pytest.raises(Exception, match="LINEAR16 only"):
            client.recognize(config=bad, audio={"content": b"\0\0"}, retry=None, timeout=20)
        long = speech_v1.RecognitionConfig(
            encoding=Encoding.LINEAR16, sample_rate_hertz=16000, language_code="en-US"
        )
        with pytest.raises(Exception, match="Sync input too long"):
            client.recognize(
                config=long, audio={"content": bytes(32000 * 61)}, retry=None, timeout=20
            )
        transport.close()


def test_missing_credentials_file_is_a_clear_error(tmp_path):
    provider = GoogleSpeech(credentials_file=str(tmp_path / "missing.json"))
    with pytest.raises(ProviderUnavailable, match=r"missing\.json' cannot be used"):
        provider.transcribe(speak(SENTENCES[5]))


# ------------------------------------------------------------------ on the hub


def hub_config(fake: FakeGoogleSpeech, **extra) -> dict:
    return {
        "speech": {
            "provider": "google",
            "google_endpoint": fake.endpoint,
            "google_insecure": True,
            "google_language": "en-GB",
            "google_timeout": 30.0,
            **extra,
        }
    }


async def test_the_transcriptions_route_uses_google_when_configured(make_server):
    from tests.speech_support import speech_entry_point
    from tests.test_speech_hub import client_for

    wav = speak(SENTENCES[0])
    with FakeGoogleSpeech(GScript(results=TWO_RESULTS)) as fake:
        with speech_entry_point():
            async with make_server(plugin_config=hub_config(fake)) as server:
                client = client_for(server)
                answer = await client.audio.transcriptions.create(
                    model="whisper-1",
                    file=("voice.webm", convert(wav, "webm")),
                    response_format="verbose_json",
                    language="de",
                )
                assert answer.text == "Please send the report. To the finance team."
                assert answer.language == "en-us"
                assert [s.start for s in answer.segments] == [0.3, 2.0]
                (call,) = fake.calls
                assert call.config.language_code == "de"  # the request's language wins
                assert call.config.sample_rate_hertz == 16000

                fake.script.error = (grpc.StatusCode.INVALID_ARGUMENT, "audio too noisy")
                with pytest.raises(openai.BadRequestError) as refused:
                    await client.audio.transcriptions.create(
                        model="whisper-1", file=("voice.wav", wav)
                    )
                assert refused.value.body["code"] == "invalid_audio"
                assert "Google Speech refused the request: audio too noisy" in str(
                    refused.value.body["message"]
                )
                fake.script.error = (grpc.StatusCode.UNAVAILABLE, "down for maintenance")
                with pytest.raises(openai.APIStatusError) as failed:
                    await client.audio.transcriptions.create(
                        model="whisper-1", file=("voice.wav", wav)
                    )
                assert failed.value.status_code == 502
                assert failed.value.body["code"] == "speech_failed"
                assert "unavailable at 127.0.0.1" in failed.value.body["message"]
                await client.close()


async def test_voice_messages_use_google_in_their_child_process(make_server):
    from tests.speech_support import speech_entry_point
    from tests.test_attachment_pipeline import results, send, setup_room, upload
    from tests.test_speech_hub import ended

    words = [word("Hello", 0.2, 0.5, 1), word("there.", 0.5, 0.9, 1)]
    words += [word("Hi.", 1.2, 1.5, 2)]
    script = GScript(
        results=[
            result("Hello there.", confidence=0.9, end=1.0),
            result("Hi.", confidence=0.8, end=1.6),
            result("", words, end=1.6),
        ]
    )
    voice = convert(speak(SENTENCES[1]), "webm")
    with FakeGoogleSpeech(script) as fake:
        config = hub_config(fake, google_diarization=True, google_max_speakers=2)
        with speech_entry_point():
            async with make_server(plugin_config=config) as server:
                _owner, alice = await setup_room(server, "talk", "speech")
                voice_id = await upload(server, "talk", "talk.webm", voice)
                await send(alice, "talk", voice_id, "g1")
                frame = await ended(alice, voice_id)
                assert frame["status"] == "done", frame
                assert frame["summary"].startswith("Transcript (en-us, 0:0"), frame
                assert frame["summary"].endswith("2 speakers): 3 words")
                stored = (await results(server, "talk", voice_id))["transcript"]
                assert stored["markdown"] == "Speaker 1: Hello there.\nSpeaker 2: Hi."
                assert stored["data"]["provider"] == "google"
                assert stored["data"]["speakers"] == ["1", "2"]
                (call,) = fake.calls
                assert call.config.language_code == "en-GB"
                assert call.config.diarization_config.max_speaker_count == 2
                assert call.config.encoding == speech_v1.RecognitionConfig.AudioEncoding.LINEAR16
