"""Stage tokenize: data/raw -> compact cl100k vocabulary, id files and the reranker's lexicon in data/tokenized."""

from nmt.stages.runner import run_stage
from nmt.stages.tokenize import tokenize

if __name__ == "__main__":
    run_stage(tokenize)
