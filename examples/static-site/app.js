console.log("static site loaded");
