"""The recipes, one module per method, each a readable sequence of resumable stages:
``sro`` (COALITION: warm-up, then rounds of generate, refine, score, select pairs, update),
``distill`` (Fine-tune-CoT: a teacher's rationales, a student's SFT) and ``saie`` (a learner
trained through a partner's supportive and adversarial remarks). ``base`` is what they share."""
