"""The spaCy tokenizers an unauthenticated tokenizer.json may carry: spaCy's own, per language.

A tokenizer file supplies regular expressions that run on every query. When the release's
manifest is authenticated (signature or pin) or comes from the operator's own directory, its
tokenizer is the publisher's and may hold any pattern the exporter wrote. Otherwise the file is
hostile input, and its spaCy part (patterns, special cases) must be exactly a stock blank spaCy
tokenizer of one language plus fastai's special tokens: `tokenizer.stock_digest` of it must be a
key below. The table is generated from spaCy itself; after a spaCy upgrade, add its entries with
`.venv/bin/python -c "from pipeline.onnx_export import write_stock_table; write_stock_table()"`
(tests/unit/test_hostile_model_inputs.py checks English against the installed spaCy).
"""

STOCK: dict[str, str] = {
    "92c2199ab0556930642bb6e928e4fda7255f522b2ac69a3a209af6ba3eb573a7": "af, az, bo, cs, dsb, et, eu, gu, he, hi, hr, hy, is, kmr, kn, lv, ml, mr, ne, sa, si, sk, sq, ta, te, ur, xx, yo (spaCy 3.8.18)",
    "e57b0069507d908c278cf463c74204956dc3b78d19df40d01f39f2beb4c884e0": "am (spaCy 3.8.18)",
    "528f7d898cae745233db6ea15faa7d85f2089ed7ad3401bd5a9f870095374533": "ar (spaCy 3.8.18)",
    "1b63a8ecc43812890e3faa8a1662476b9e9e329fa88551b0e8038228cb21057f": "bg (spaCy 3.8.18)",
    "e199a9a92939878492407a8a60fa7e903750ab7d61d7fa52504308473a2293f4": "bn (spaCy 3.8.18)",
    "a0929319792a272c9c5cad242c12c106062e0db60b108b73315c8e3c467b8889": "ca (spaCy 3.8.18)",
    "6184efc45416c8304f5619b2fbec3f2b72b92b99645b865cc9f9a6ab60efd70d": "da (spaCy 3.8.18)",
    "cd6a0ea4bcdd79d538498daaf831b81cdb92eefeca379d16f44cb26f213d2cbc": "de (spaCy 3.8.18)",
    "aedf9da9a09a55c6fe6bd935e6cfb2c48f5ec39dfeb25a6d301338215fbe9c96": "el (spaCy 3.8.18)",
    "8515e2058eda2ef4b31132a3f83851282b902cd174625044108b2465de960f89": "en (spaCy 3.8.18)",
    "1507dca3888c3784bc7cc06b32cba569c63a4f5d315074eb0748eff588ca6d8b": "es (spaCy 3.8.18)",
    "23844f308f19fb50f4dd8c041e00782025dcd339a0ba843e243c8e8588c87df1": "fa (spaCy 3.8.18)",
    "00c9ce744886fab27c1b3e92171b05d099ed03b4f33b82756f00394e9d3bbe48": "fi (spaCy 3.8.18)",
    "b847c3cd891c613391dcb0f2302f6971dfb6c3e2d8bf4d4175fcbd13d9348442": "fo (spaCy 3.8.18)",
    "4b66c4e66a5567588c3a29c25908ade3fbca44a3c6474749ba770e216bf52c25": "fr (spaCy 3.8.18)",
    "fca6759f05c2a2bba78398baa20d6a928e44274cabd56b07f0a09e07589aa050": "ga (spaCy 3.8.18)",
    "18cfecec321a310686c36a1fb10b15dcf2642b5c9297ffa1672b74cccbb4300f": "gd (spaCy 3.8.18)",
    "6e01efb923622ec2efa7a3ffc5c8e9b77e086c0433ee935c96428678b739d633": "grc (spaCy 3.8.18)",
    "7237de5153127dd3cb04302d10d857e5d6c9bbce54e03b9c4e0537ca99e814de": "hsb (spaCy 3.8.18)",
    "77012bae8c66cd60aa503e0327bb258f5ae237787956348b8087128c3b52606b": "ht (spaCy 3.8.18)",
    "655fd358fe6dcc4910f4cfef11e8cddbbb4cb079315446b546018a3438526876": "hu (spaCy 3.8.18)",
    "436c79485500ba885b6ab164b0d4c6d19b5bc524746899220e081783d669c185": "id (spaCy 3.8.18)",
    "8c96f2acd6d934de6b9471548f5ad8a223fb31937ef76c895a44b6b910137f05": "it (spaCy 3.8.18)",
    "844a49caf85e5cecf5b738605870de29ad97ff95f68f13e92e6bea3232f2215d": "ky (spaCy 3.8.18)",
    "9a4651d43ca8014c4e2a0f90028a18dd99a357cfc8e06dbbcf9f8ff47e9ecca0": "la (spaCy 3.8.18)",
    "dd681574c064ccfffe5c62486f6e00649ef1f897523663e6e6f0edebdd00047b": "lb (spaCy 3.8.18)",
    "69e2fa25b31ffa91f396ae3424e1c0bae05118a74454e00abc1f2bb01f8fefac": "lg, tn (spaCy 3.8.18)",
    "c16aed3a59241d96e104df1b6ffa85ae962c5a31be82b49b66dd1c36cad4897b": "lij (spaCy 3.8.18)",
    "1b3d1070fb1da3479c0ce4549768d679cdb41304455d5fcca1590b1192037683": "lt (spaCy 3.8.18)",
    "8e4977e9022433155092be1f51ef8ddf0568e31a1b8e4a3f11bac113764d249b": "mk (spaCy 3.8.18)",
    "7a84976b3692e8f9e8bfb06f71bd142437d0346784d72998587046506343422b": "ms (spaCy 3.8.18)",
    "0ef9c8bb7c6b8e8c55f656d2c1b0c8719108957698c61982c9520153fcb0c359": "nb (spaCy 3.8.18)",
    "1c8392f8736be9b307ee43d26f937d1fca894f3a320130865f0a8fde5934b939": "nl (spaCy 3.8.18)",
    "166b5fb38694c079794ed00c2f518483c96557a2ca292b2e065a1c6618fa9a53": "nn (spaCy 3.8.18)",
    "07ceb20f9d03e888b33ed6ece3d0003a7bda86e43fd2a4c7aceb7218ae91a951": "pl (spaCy 3.8.18)",
    "28a4973efd09f02a003addc5eade61159c9b61a6e7c9e4fcf3c4c0469cd81558": "pt (spaCy 3.8.18)",
    "b085a8879777c569cfa194593f23a0b11b0cfcdded4960fc6d6a75022a1f453e": "ro (spaCy 3.8.18)",
    "2e836e8f2c944319de56c6ad5e3d24b3147ab58f214b5c010faece61195fcbd2": "ru (spaCy 3.8.18)",
    "6171c34563bb63c6f4effb9f21e0d7dbe4bc4e1aead5b541b563af197c9d2041": "sl (spaCy 3.8.18)",
    "b193d1a39f98f36665eba8f2add5387b19b26357218683e999545720a6a5bee9": "sr (spaCy 3.8.18)",
    "b4e40ecfefe0d805b1da58c44f5f9e118a93b654205cdbf873b5acc613563297": "sv (spaCy 3.8.18)",
    "74d11762b53719b4f1eeb77b3477935c046235f93bb17e0d104f393eeb9a172f": "ti (spaCy 3.8.18)",
    "74cde46507982a3e71297d7f3c815e248225fe6752058cb59619018625c76d8c": "tl (spaCy 3.8.18)",
    "ae58ed3efb53eab4847df2e04e6d41ff4f8349c47468f9e8078c5beeb2587d9e": "tr (spaCy 3.8.18)",
    "fb04f70e80d0c3df4d504cf11e40b21093df71c1d4cc44c72129b540ad2b5b89": "tt (spaCy 3.8.18)",
    "fad29659cf6384c30237759f7f21a531d2282fa21bb3eff1f094d9dd07bed3e4": "uk (spaCy 3.8.18)",
}
