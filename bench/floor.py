"""The floor for Python HTTP scoring (performance.md): a raw ASGI callable on uvicorn that
holds the fitted iris model in memory and answers in ML Server's reply shape. No auth, no
isolation, no storage. Usage: python bench/floor.py PORT"""
import json
import sys

import uvicorn
from sklearn import datasets, svm

iris = datasets.load_iris()
clf = svm.SVC().fit(iris.data, iris.target)
names = {0: "I. setosa", 1: "I. versicolor", 2: "I. virginica"}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    flower = json.loads(body)["flower_data"]
    species = [names[int(x)] for x in clf.predict([flower])]
    out = json.dumps({"success": True, "errorMessage": "", "consoleOutput": "", "changedFiles": [],
                      "outputParameters": {"iris_species": species}}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", http="httptools", loop="uvloop")
